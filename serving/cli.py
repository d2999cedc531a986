"""``loraforge serve``: the OpenAI-compatible API on the chat engine, or the vLLM command."""

from __future__ import annotations

import enum
import os
from typing import Annotated

import typer

from core.device import DTYPE_HELP, ServeDtype
from serving.limits import (
    DEFAULT_MAX_ADAPTERS,
    DEFAULT_MAX_BATCH,
    DEFAULT_PREFIX_CACHE_MB,
    MERGE_HELP,
    PREFIX_CACHE_HELP,
)


class EngineKind(str, enum.Enum):
    loraforge = "loraforge"
    vllm = "vllm"


def serve_command(
    base: str | None = typer.Option(
        None, help="Registered base model to serve; default LORAFORGE_BASE_MODEL, else the "
        "base of the newest adapter. Its adapters are the other `model` ids."),
    host: str = typer.Option(
        "127.0.0.1", help="Interface to bind; 0.0.0.0 exposes the API to your network."),
    port: int = typer.Option(8000, min=1, max=65535, help="Port to listen on."),
    api_key: str | None = typer.Option(
        None, "--api-key", envvar="LORAFORGE_API_KEY", show_envvar=True,
        help="Require `Authorization: Bearer KEY` (what OpenAI clients send as api_key). "
        "Prefer the environment variable: a command line is visible to other users."),
    engine: Annotated[EngineKind, typer.Option(
        help="loraforge: serve here on one base, concurrent requests batched across adapters. "
        "vllm: print the "
        "`vllm serve` command for this base and its adapters (many GPUs, batched LoRA) and "
        "exit; the same clients work against it.")] = EngineKind.loraforge,
    max_batch: int = typer.Option(
        DEFAULT_MAX_BATCH, min=1, help="Requests decoded together at most; more wait their "
        "turn. Larger batches raise throughput and memory."),
    max_adapters: int = typer.Option(
        DEFAULT_MAX_ADAPTERS, min=1, help="Adapters kept attached at once (least recently "
        "used dropped first); also the most distinct adapters in one batch."),
    prefix_cache_mb: int = typer.Option(DEFAULT_PREFIX_CACHE_MB, min=0,
                                        help=PREFIX_CACHE_HELP),
    merge: bool = typer.Option(True, "--merge/--no-merge", help=MERGE_HELP),
    dtype: Annotated[ServeDtype, typer.Option(help=DTYPE_HELP)] = ServeDtype.auto,
    max_loras: int | None = typer.Option(
        None, min=1, help="With --engine vllm: adapters vLLM keeps active at once; default: all "
        "of the base's adapters."),
) -> None:
    """Serve the base and its adapters through an OpenAI-compatible API (/v1/models,
    /v1/chat/completions with streaming, /v1/completions)."""
    # Imported here, not above: the engine pulls in torch, which `loraforge --help` and every
    # other command would otherwise wait for.
    from serving.engine import ChatEngine

    if engine is EngineKind.vllm:
        from serving.vllm import vllm_plan

        chat = ChatEngine(base=base)  # resolves the default base as `serve` would
        plan = vllm_plan(chat.base_name, host=host, port=port, max_loras=max_loras)
        typer.echo(plan.command)
        if api_key or os.environ.get("LORAFORGE_API_KEY"):
            typer.echo("# vLLM reads its key from VLLM_API_KEY: export it before running this",
                       err=True)
        return
    import uvicorn

    from serving.openai_api import build_app

    chat = ChatEngine(base=base, max_batch=max_batch, max_adapters=max_adapters,
                      merge_lone_adapter=merge,
                      prefix_cache_mb=prefix_cache_mb, dtype=dtype.value)
    typer.echo(f"Loading base model {chat.base_name!r} on {chat.device}…")
    chat.load()
    models = [chat.base_name, *chat.list_choices()[1:]]
    typer.echo(f"OpenAI-compatible API on http://{host}:{port}/v1 — models: {', '.join(models)}"
               + ("" if api_key else " (no key required)"))
    uvicorn.run(build_app(chat, api_key), host=host, port=port, log_level="warning")
