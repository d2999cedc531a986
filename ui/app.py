"""The Gradio app: ``create_ui`` composes the tabs from ``ui/components``."""

from __future__ import annotations

import abc

import gradio as gr

from ui.components.chat import build_chat_tab
from ui.engine import BASE_ONLY, ChatEngine

QUEUE_MAX_SIZE = 64


def _drop_empty_abc_interface_declaration() -> None:
    """Undo a side effect of importing Scrapy's Twisted TLS code in the same process.

    zope.interface then caches an empty ``ClassProvides`` on ``abc.ABC``; it raises
    AttributeError when read through an instance, and Gradio's component constructor reads
    every class attribute through the instance. An empty declaration carries no interface,
    so removing it changes nothing for Twisted.
    """
    declaration = abc.ABC.__dict__.get("__provides__")
    if declaration is not None and not list(declaration):
        delattr(abc.ABC, "__provides__")


def create_ui(engine: ChatEngine) -> gr.Blocks:
    """The whole app around one engine; every browser session shares the engine, not state."""
    _drop_empty_abc_interface_declaration()
    with gr.Blocks(title="LoRAForge chat") as app:
        gr.Markdown(f"# LoRAForge chat\nBase model: **{engine.base_name}**")
        chat = build_chat_tab(engine)
        # Each page load reads the adapter list fresh, so new adapters show up without a restart.
        app.load(
            lambda: gr.Dropdown(choices=engine.list_choices(), value=BASE_ONLY),
            outputs=chat.adapter,
            api_name=False,
            queue=False,
        )
    app.queue(max_size=QUEUE_MAX_SIZE, default_concurrency_limit=2)
    return app
