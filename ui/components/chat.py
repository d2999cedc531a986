"""The Chat tab: pick an adapter (or the base model alone), talk to it, or compare two choices."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import gradio as gr

from serving.engine import ChatEngine
from ui.components.common import (
    DEFAULT_MAX_NEW_TOKENS,
    MAX_MESSAGE_CHARS,
    GenerationSettings,
    build_settings,
    checked_message,
    sampling,
    user_errors,
    with_system,
)
from ui.components.compare import build_compare
from ui.i18n import I18N

log = logging.getLogger(__name__)


@dataclass
class ChatTab:
    """The components other parts of the app wire events to."""

    adapter: gr.Dropdown
    chatbot: gr.Chatbot
    message: gr.Textbox
    settings: GenerationSettings
    refresh: gr.Button


def refresh_choices(engine: ChatEngine, current: str | None) -> gr.Dropdown:
    """The picker read fresh from the registry, keeping the current choice if still there."""
    with user_errors():
        choices = engine.grouped_choices()
    values = [value for _, value in choices]
    return gr.Dropdown(choices=choices,
                       value=current if current in values else engine.default_choice())


def _chat(
    engine: ChatEngine,
    adapter_choice: str | None,
    message: str | None,
    history: list[dict[str, Any]] | None,
    max_new_tokens: float = DEFAULT_MAX_NEW_TOKENS,
) -> tuple[list[dict[str, Any]], str]:
    """The whole reply at once (api ``/chat``, kept for scripts and the demo)."""
    history = list(history or [])
    text = checked_message(message)
    if not text:
        gr.Warning("Type a message first.")
        return history, message or ""
    conversation = [*history, {"role": "user", "content": text}]
    tokens = sampling(max_new_tokens, 0.0, 1.0)["max_new_tokens"]
    with user_errors():
        reply = engine.generate(adapter_choice, conversation, max_new_tokens=tokens)
    return [*conversation, {"role": "assistant", "content": reply}], ""


def _chat_stream(
    engine: ChatEngine,
    adapter_choice: str | None,
    message: str | None,
    history: list[dict[str, Any]] | None,
    max_new_tokens: float = DEFAULT_MAX_NEW_TOKENS,
    temperature: float = 0.0,
    top_p: float = 1.0,
    system_prompt: str | None = "",
) -> Iterator[tuple[list[dict[str, Any]], str]]:
    """The reply as it is generated (api ``/chat_stream``); the system prompt is not stored."""
    history = list(history or [])
    text = checked_message(message)
    if not text:
        gr.Warning("Type a message first.")
        yield history, message or ""
        return
    conversation = [*history, {"role": "user", "content": text}]
    yield [*conversation, {"role": "assistant", "content": ""}], ""
    reply = ""
    with user_errors():
        for reply in engine.stream(
            adapter_choice,
            with_system(system_prompt, conversation),
            **sampling(max_new_tokens, temperature, top_p),
        ):
            yield [*conversation, {"role": "assistant", "content": reply}], ""
    yield [*conversation, {"role": "assistant", "content": reply}], ""


def build_chat_tab(engine: ChatEngine) -> ChatTab:
    """Lay out the Chat tab and wire its events.

    Api names: ``chat`` (whole reply), ``chat_stream``, ``list_adapters``, and ``compare``
    from ``ui.components.compare``.
    """
    with gr.Tab(I18N("tab_chat"), id="chat"):
        with gr.Row():
            adapter = gr.Dropdown(
                choices=engine.grouped_choices(),
                value=engine.default_choice(),
                label=I18N("adapter"),
                # The engine checks the label against the store, so adapters registered after
                # the page loaded (or called over the API) work without a refresh.
                allow_custom_value=True,
                info=I18N("adapter_info"),
                scale=4,
                elem_id="adapter-picker",
            )
            refresh = gr.Button(I18N("refresh"), scale=1)
        chatbot = gr.Chatbot(label=I18N("conversation"), height=380, elem_id="chatbot")
        with gr.Row():
            message = gr.Textbox(
                label=I18N("message"),
                placeholder=I18N("ask"),
                show_label=False,
                max_length=MAX_MESSAGE_CHARS,
                scale=5,
                elem_id="message",
            )
            send = gr.Button(I18N("send"), variant="primary", scale=1, elem_id="send")
        settings = build_settings()
        clear = gr.Button(I18N("clear"), size="sm")
        whole_reply = gr.Button(visible=False)  # carries the /chat api, which the page doesn't use
        compare = build_compare(engine, settings)

    refresh.click(
        partial(refresh_choices, engine),
        inputs=adapter,
        outputs=adapter,
        api_name="list_adapters",
        queue=False,
    )
    for picker in (compare.left, compare.right):
        refresh.click(partial(refresh_choices, engine), inputs=picker, outputs=picker,
                      api_name=False, queue=False)
    gr.on(
        triggers=[send.click, message.submit],
        fn=partial(_chat_stream, engine),
        inputs=[adapter, message, chatbot, *settings.inputs()],
        outputs=[chatbot, message],
        api_name="chat_stream",
        concurrency_limit=engine.max_batch,
        concurrency_id="generate",
    )
    whole_reply.click(
        partial(_chat, engine),
        inputs=[adapter, message, chatbot, settings.max_new_tokens],
        outputs=[chatbot, message],
        api_name="chat",
        concurrency_limit=engine.max_batch,
        concurrency_id="generate",
    )
    clear.click(lambda: ([], ""), outputs=[chatbot, message], api_name=False, queue=False)
    return ChatTab(adapter, chatbot, message, settings, refresh)
