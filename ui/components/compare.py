"""Compare mode: two choices (base vs adapter, or two adapters) answer one prompt side by side."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import gradio as gr

from serving.engine import BASE_ONLY, ChatEngine
from ui.components.common import (
    GenerationSettings,
    checked_message,
    sampling,
    user_errors,
    with_system,
)
from ui.i18n import I18N

Messages = list[dict[str, Any]]


@dataclass
class CompareSection:
    left: gr.Dropdown
    right: gr.Dropdown


def _compare(
    engine: ChatEngine,
    left_choice: str | None,
    right_choice: str | None,
    message: str | None,
    max_new_tokens: float = 128,
    temperature: float = 0.0,
    top_p: float = 1.0,
    system_prompt: str | None = "",
) -> Iterator[tuple[Messages, Messages, str]]:
    """Stream the left reply, then the right one (api ``/compare``).

    One prompt, no history: each side answers the same single question, so the two replies
    differ only by the adapter. The engine serves one generation at a time anyway, so
    streaming them one after the other costs nothing.
    """
    text = checked_message(message)
    if not text:
        gr.Warning("Type a message first.")
        yield [], [], message or ""
        return
    question = [{"role": "user", "content": text}]
    settings = sampling(max_new_tokens, temperature, top_p)
    sides: list[Messages] = [[*question, _reply("")], [*question, _reply("")]]
    yield sides[0], sides[1], ""
    with user_errors():
        for index, choice in enumerate((left_choice, right_choice)):
            for reply in engine.stream(choice, with_system(system_prompt, question), **settings):
                sides[index] = [*question, _reply(reply)]
                yield sides[0], sides[1], ""
    yield sides[0], sides[1], ""


def _reply(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def build_compare(engine: ChatEngine, settings: GenerationSettings) -> CompareSection:
    """An accordion under the chat with two pickers, one prompt and two answer panes."""
    choices = engine.grouped_choices()
    second = choices[1][1] if len(choices) > 1 else BASE_ONLY
    with gr.Accordion(I18N("compare"), open=False, elem_id="compare"):
        with gr.Row():
            left = gr.Dropdown(choices=choices, value=BASE_ONLY, label=I18N("left"),
                               allow_custom_value=True, elem_id="compare-left")
            right = gr.Dropdown(choices=choices, value=second, label=I18N("right"),
                                allow_custom_value=True, elem_id="compare-right")
        with gr.Row():
            message = gr.Textbox(show_label=False, placeholder=I18N("ask"), scale=5,
                                 max_length=2000, elem_id="compare-message")
            ask = gr.Button(I18N("compare_send"), variant="primary", scale=1,
                            elem_id="compare-send")
        with gr.Row():
            left_pane = gr.Chatbot(label=I18N("left"), height=300, elem_id="compare-left-pane")
            right_pane = gr.Chatbot(label=I18N("right"), height=300, elem_id="compare-right-pane")
    gr.on(
        triggers=[ask.click, message.submit],
        fn=partial(_compare, engine),
        inputs=[left, right, message, *settings.inputs()],
        outputs=[left_pane, right_pane, message],
        api_name="compare",
        concurrency_limit=engine.max_batch,
        concurrency_id="generate",
    )
    return CompareSection(left, right)
