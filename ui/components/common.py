"""What the tabs share: errors shown as messages, the message and sampling checks, and the
generation settings (sliders and system prompt) that the chat and compare sections read."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import gradio as gr

from core.errors import LoraForgeError
from ui.i18n import I18N

MAX_MESSAGE_CHARS = 2000
MAX_SYSTEM_PROMPT_CHARS = 2000
DEFAULT_MAX_NEW_TOKENS = 128
MAX_NEW_TOKENS_LIMIT = 512

log = logging.getLogger(__name__)


@dataclass
class GenerationSettings:
    """The settings components every chat event reads."""

    max_new_tokens: gr.Slider
    temperature: gr.Slider
    top_p: gr.Slider
    system_prompt: gr.Textbox

    def inputs(self) -> list[gr.components.Component]:
        return [self.max_new_tokens, self.temperature, self.top_p, self.system_prompt]


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn our errors into a message in the UI, and anything else into one without a traceback."""
    try:
        yield
    except gr.Error:
        raise
    except LoraForgeError as exc:
        raise gr.Error(str(exc)) from exc
    except Exception as exc:
        log.exception("request failed")
        raise gr.Error(f"Request failed ({type(exc).__name__}); see the server log.") from exc


def checked_message(message: str | None) -> str:
    text = (message or "").strip()
    if len(text) > MAX_MESSAGE_CHARS:
        raise gr.Error(f"The message is {len(text)} characters; the limit is {MAX_MESSAGE_CHARS}.")
    return text


def sampling(
    max_new_tokens: float, temperature: float, top_p: float
) -> dict[str, float | int]:
    """Clamp the settings: the API accepts any number, not just what the sliders allow."""
    return {
        "max_new_tokens": max(1, min(int(max_new_tokens), MAX_NEW_TOKENS_LIMIT)),
        "temperature": max(0.0, min(float(temperature), 2.0)),
        "top_p": max(0.05, min(float(top_p), 1.0)),
    }


def with_system(system_prompt: str | None, chat: list[dict[str, Any]]) -> list[dict[str, Any]]:
    system = (system_prompt or "").strip()
    if len(system) > MAX_SYSTEM_PROMPT_CHARS:
        raise gr.Error(f"The system prompt is over {MAX_SYSTEM_PROMPT_CHARS} characters.")
    return [{"role": "system", "content": system}, *chat] if system else chat


def build_settings() -> GenerationSettings:
    with gr.Accordion(I18N("settings"), open=False):
        with gr.Row():
            max_new_tokens = gr.Slider(
                8, MAX_NEW_TOKENS_LIMIT, value=DEFAULT_MAX_NEW_TOKENS, step=8,
                label=I18N("max_new_tokens"),
            )
            temperature = gr.Slider(0.0, 2.0, value=0.0, step=0.05, label=I18N("temperature"))
            top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label=I18N("top_p"))
        system_prompt = gr.Textbox(
            label=I18N("system_prompt"), lines=2, max_length=MAX_SYSTEM_PROMPT_CHARS
        )
    return GenerationSettings(max_new_tokens, temperature, top_p, system_prompt)
