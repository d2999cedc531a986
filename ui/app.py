"""The Gradio app: ``create_ui`` composes the tabs from ``ui/components``."""

from __future__ import annotations

import abc

import gradio as gr

from serving.engine import ChatEngine
from ui.components.adapters import build_adapters_tab, refresh_registry
from ui.components.chat import build_chat_tab, refresh_choices
from ui.components.data import build_data_tab
from ui.components.train import build_train_tab, form_choices
from ui.i18n import I18N

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
    """The whole app around one engine; every browser session shares the engine, not state.

    Launch it with ``i18n=ui.i18n.I18N`` so the labels are translated (``ui.cli.launch`` does).
    """
    _drop_empty_abc_interface_declaration()
    with gr.Blocks(title="LoRAForge") as app:
        gr.Markdown(f"# LoRAForge\nBase model: **{engine.base_name}**")
        with gr.Tabs():
            chat = build_chat_tab(engine)
            adapters = build_adapters_tab()
            build_data_tab()
            train = build_train_tab()
        # Each page load reads the adapter list fresh, so new adapters show up without a restart.
        app.load(
            lambda: gr.Dropdown(choices=engine.grouped_choices(), value=engine.default_choice()),
            outputs=chat.adapter,
            api_name=False,
            queue=False,
        )
        app.load(form_choices, outputs=train.form, api_name=False, queue=False)
        # A finished run's adapter shows up in the pickers without the user pressing refresh.
        train.done.change(
            lambda current: refresh_choices(engine, current),
            inputs=chat.adapter,
            outputs=chat.adapter,
            api_name=False,
            queue=False,
        )
        train.done.change(refresh_registry, outputs=adapters.outputs, api_name=False)
    app.queue(max_size=QUEUE_MAX_SIZE, default_concurrency_limit=2)
    return app


__all__ = ["I18N", "create_ui"]
