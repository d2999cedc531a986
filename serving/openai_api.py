"""An OpenAI-compatible HTTP API on the chat engine: ``/v1/models``, ``/v1/chat/completions``
(streamed as server-sent events or not) and ``/v1/completions``.

The served base and every adapter of it are ``model`` ids, as in vLLM and LoRAX: a client picks
an adapter per request by naming it (``alpha:v1``), or the base alone by the base's name. Errors
are OpenAI-shaped JSON (``{"error": {"message", "type", "param", "code"}}``) with the status the
official clients expect: 400 for a malformed body, 401 without the key, 404 for an unknown
model. Requests are served by the engine one after another (its lock); batching is not here yet.
"""

from __future__ import annotations

import itertools
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from core.errors import LoraForgeError
from serving.engine import BASE_ONLY, ChatEngine

MAX_TOKENS_LIMIT = 2048


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, kind: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = (status, message, kind,
                                                                      param, code)

    def response(self) -> JSONResponse:
        return JSONResponse(status_code=self.status, content={"error": {
            "message": self.message, "type": self.kind, "param": self.param, "code": self.code}})


class Message(BaseModel):
    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(BaseModel):
    model: str
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_LIMIT)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_LIMIT)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stream: bool = False
    n: int = Field(default=1, ge=1, le=1)


class CompletionRequest(BaseModel):
    model: str
    prompt: str
    max_tokens: int | None = Field(default=16, ge=1, le=MAX_TOKENS_LIMIT)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stream: bool = False
    n: int = Field(default=1, ge=1, le=1)


def _choice(engine: ChatEngine, model: str) -> str:
    """The engine's choice for a ``model`` id: the base's name, or one of its adapters."""
    if model == engine.base_name:
        return BASE_ONLY
    if model in engine.list_choices()[1:]:
        return model
    raise ApiError(404, f"The model `{model}` does not exist on this server; GET /v1/models "
                   f"lists the served base ({engine.base_name}) and its adapters",
                   param="model", code="model_not_found")


def _count(engine: ChatEngine, text: str) -> int:
    return len(engine.tokenizer(text, add_special_tokens=False)["input_ids"]) \
        if engine.tokenizer is not None else 0


def _finish(completion_tokens: int, max_tokens: int) -> str:
    return "length" if completion_tokens >= max_tokens else "stop"


def _sse(payload: dict[str, Any] | str) -> str:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n"


def build_app(engine: ChatEngine, api_key: str | None = None) -> FastAPI:
    """The API as a FastAPI app (``uvicorn.run(app)``); with ``api_key`` every request needs
    ``Authorization: Bearer KEY``."""
    app = FastAPI(title="LoRAForge OpenAI-compatible API", docs_url=None, redoc_url=None)

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def bad_body(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return ApiError(400, f"invalid request: {where or 'body'}: {first.get('msg', exc)}",
                        param=where).response()

    @app.middleware("http")
    async def check_key(request: Request, call_next):
        if api_key is not None:
            given = request.headers.get("authorization", "")
            if not secrets.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                return ApiError(401, "Incorrect or missing API key; send Authorization: Bearer "
                                "KEY (the key `loraforge serve` was started with)",
                                code="invalid_api_key").response()
        return await call_next(request)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        labels = await run_in_threadpool(engine.list_choices)
        ids = [engine.base_name, *labels[1:]]
        return {"object": "list", "data": [
            {"id": i, "object": "model", "created": 0, "owned_by": "loraforge",
             "root": engine.base_name, "parent": None if i == engine.base_name else
             engine.base_name} for i in ids]}

    def answer(request: Request, model: str, messages: list[dict[str, Any]], max_tokens: int,
               temperature: float, top_p: float, stream: bool, kind: str):
        choice = _choice(engine, model)
        created, ident = int(time.time()), f"{kind}-{uuid.uuid4().hex[:24]}"
        prompt = "\n".join(str(m.get("content") or "") for m in messages)
        settings = {"max_new_tokens": max_tokens, "temperature": temperature, "top_p": top_p}

        def shaped(text: str, finish: str | None, delta: bool) -> dict[str, Any]:
            if kind == "chatcmpl":
                body = {"delta": {"content": text} if delta else None,
                        "message": None if delta else {"role": "assistant", "content": text}}
                choice_body = {k: v for k, v in body.items() if v is not None}
            else:
                choice_body = {"text": text, "logprobs": None}
            return {"id": ident, "object": ("chat.completion.chunk" if delta else
                                            "chat.completion") if kind == "chatcmpl" else
                    "text_completion", "created": created, "model": model,
                    "choices": [{"index": 0, **choice_body, "finish_reason": finish}]}

        if not stream:
            try:
                reply = engine.generate(choice, messages, **settings)
            except LoraForgeError as exc:
                raise ApiError(400, str(exc)) from exc
            prompt_tokens, completion_tokens = _count(engine, prompt), _count(engine, reply)
            return {**shaped(reply, _finish(completion_tokens, max_tokens), delta=False),
                    "usage": {"prompt_tokens": prompt_tokens,
                              "completion_tokens": completion_tokens,
                              "total_tokens": prompt_tokens + completion_tokens}}

        try:  # the first step runs now, so a bad request is an error status, not a stream
            pieces = engine.stream(choice, messages, **settings)
            first = next(pieces, None)
        except LoraForgeError as exc:
            raise ApiError(400, str(exc)) from exc

        def events() -> Iterator[str]:
            sent = ""
            if kind == "chatcmpl":
                yield _sse({**shaped("", None, delta=True), "choices": [
                    {"index": 0, "delta": {"role": "assistant", "content": ""},
                     "finish_reason": None}]})
            text = ""
            for text in itertools.chain([] if first is None else [first], pieces):
                # A trailing U+FFFD is half a character whose bytes are still coming; a delta
                # once sent cannot be taken back, so it waits for the next step.
                stable = text.rstrip("\ufffd")
                if len(stable) > len(sent) and stable.startswith(sent):
                    yield _sse(shaped(stable[len(sent):], None, delta=True))
                    sent = stable
            if len(text) > len(sent) and text.startswith(sent):
                yield _sse(shaped(text[len(sent):], None, delta=True))
                sent = text
            yield _sse(shaped("", _finish(_count(engine, sent), max_tokens), delta=True))
            yield _sse("[DONE]")

        async def until_hung_up() -> AsyncIterator[str]:
            # A client that hangs up must free its row at the next decode step. The server may
            # go on accepting writes to a closed connection, so ask after every piece.
            try:
                async for chunk in iterate_in_threadpool(events()):
                    if await request.is_disconnected():
                        break
                    yield chunk
            finally:
                pieces.cancel()

        return StreamingResponse(until_hung_up(),
                                 media_type="text/event-stream")

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest, request: Request):
        messages = [m.model_dump() for m in body.messages]
        max_tokens = body.max_completion_tokens or body.max_tokens or 256
        return await run_in_threadpool(answer, request, body.model, messages, max_tokens,
                                       body.temperature, body.top_p, body.stream, "chatcmpl")

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        # The engine serves chat models: the prompt is one user turn through the chat template.
        messages = [{"role": "user", "content": body.prompt}]
        return await run_in_threadpool(answer, request, body.model, messages,
                                       body.max_tokens or 16, body.temperature, body.top_p,
                                       body.stream, "cmpl")

    return app
