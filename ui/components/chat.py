"""The Chat tab: pick an adapter (or the base model alone) and talk to it."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from typing import Any

import gradio as gr

from registry.errors import LoraForgeError
from ui.engine import BASE_ONLY, ChatEngine

MAX_MESSAGE_CHARS = 2000
DEFAULT_MAX_NEW_TOKENS = 128
MAX_NEW_TOKENS_LIMIT = 512

log = logging.getLogger(__name__)


@dataclass
class ChatTab:
    """The components other parts of the app wire events to."""

    adapter: gr.Dropdown
    chatbot: gr.Chatbot
    message: gr.Textbox


def _refresh_choices(engine: ChatEngine, current: str | None) -> gr.Dropdown:
    try:
        choices = engine.list_choices()
    except LoraForgeError as exc:
        raise gr.Error(str(exc)) from exc
    value = current if current in choices else BASE_ONLY
    return gr.Dropdown(choices=choices, value=value)


def _chat(
    engine: ChatEngine,
    adapter_choice: str | None,
    message: str | None,
    history: list[dict[str, Any]] | None,
    max_new_tokens: float = DEFAULT_MAX_NEW_TOKENS,
) -> tuple[list[dict[str, Any]], str]:
    history = list(history or [])
    text = (message or "").strip()
    if not text:
        gr.Warning("Type a message first.")
        return history, message or ""
    if len(text) > MAX_MESSAGE_CHARS:
        raise gr.Error(f"The message is {len(text)} characters; the limit is {MAX_MESSAGE_CHARS}.")
    conversation = [*history, {"role": "user", "content": text}]
    try:
        tokens = max(1, min(int(max_new_tokens), MAX_NEW_TOKENS_LIMIT))  # the API skips the slider
        reply = engine.generate(adapter_choice, conversation, max_new_tokens=tokens)
    except LoraForgeError as exc:
        raise gr.Error(str(exc)) from exc
    except Exception as exc:  # a model failure must not show the user a traceback
        log.exception("generation failed")
        raise gr.Error(f"Generation failed ({type(exc).__name__}); see the server log.") from exc
    return [*conversation, {"role": "assistant", "content": reply}], ""


def build_chat_tab(engine: ChatEngine) -> ChatTab:
    """Lay out the Chat tab and wire its events (api names: ``chat``, ``list_adapters``)."""
    with gr.Tab("Chat"):
        with gr.Row():
            adapter = gr.Dropdown(
                choices=engine.list_choices(),
                value=BASE_ONLY,
                label="Adapter",
                # The engine checks the label against the store, so adapters registered after
                # the page loaded (or called over the API) work without a refresh.
                allow_custom_value=True,
                info=f"Adapters of base model {engine.base_name!r}",
                scale=4,
            )
            refresh = gr.Button("Refresh list", scale=1)
        chatbot = gr.Chatbot(label="Conversation", height=420)
        with gr.Row():
            message = gr.Textbox(
                label="Message",
                placeholder="Ask a question…",
                show_label=False,
                max_length=MAX_MESSAGE_CHARS,
                scale=5,
            )
            send = gr.Button("Send", variant="primary", scale=1)
        with gr.Row():
            max_new_tokens = gr.Slider(
                8,
                MAX_NEW_TOKENS_LIMIT,
                value=DEFAULT_MAX_NEW_TOKENS,
                step=8,
                label="Max new tokens",
            )
            clear = gr.Button("Clear conversation")

    refresh.click(
        partial(_refresh_choices, engine),
        inputs=adapter,
        outputs=adapter,
        api_name="list_adapters",
        queue=False,
    )
    gr.on(
        triggers=[send.click, message.submit],
        fn=partial(_chat, engine),
        inputs=[adapter, message, chatbot, max_new_tokens],
        outputs=[chatbot, message],
        api_name="chat",
        concurrency_limit=2,
    )
    clear.click(lambda: ([], ""), outputs=[chatbot, message], api_name=False, queue=False)
    return ChatTab(adapter=adapter, chatbot=chatbot, message=message)
