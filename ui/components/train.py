"""The Train tab: start ``loraforge train`` as a subprocess, stream its log, plot its loss."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import gradio as gr
import pandas as pd

from registry.adapters import list_runs
from registry.bases import list_bases
from registry.snapshots import list_snapshots
from ui.components.common import user_errors
from ui.i18n import I18N
from ui.jobs import loraforge_argv, stream_job

EMPTY_CURVE = pd.DataFrame({"step": [], "loss": []})


@dataclass
class TrainTab:
    done: gr.Textbox  # holds "ok" after a successful run; other tabs refresh on its change
    form: list[gr.components.Component]  # what ``form_choices`` fills


def _methods() -> list[str]:
    try:
        from trainers.discovery import discover_backends

        return sorted(discover_backends()) or ["lora"]
    except Exception:  # a broken plugin must not take the whole tab down; the CLI will say why
        return ["lora"]


def train_argv(method: str, base: str, dataset: str | None, rank: float, lr: float,
               max_steps: float) -> list[str]:
    """The ``loraforge train`` argv for the form; its values are checked by the method's own
    config dataclass (the limits and messages the CLI has), before any process starts."""
    from trainers.discovery import get_backend, method_has_rank
    from trainers.run import make_config

    if not method or not base:
        raise gr.Error("Pick a method and a base model.")
    with user_errors():
        values = {"learning_rate": float(lr), "max_steps": int(max_steps)}
        if method_has_rank(method):  # the full fine-tune has no adapter rank and refuses one
            values["rank"] = int(rank)
        make_config(get_backend(method).config_class, values)
    argv = ["train", "--method", method, "--base", base,
            "--lr", repr(float(lr)), "--max-steps", str(int(max_steps))]
    if "rank" in values:
        argv += ["--rank", str(int(rank))]
    if dataset:
        argv += ["--dataset", dataset]
    return loraforge_argv(*argv)


def _newest_loss_curve(after_run_id: int) -> pd.DataFrame:
    runs = [r for r in list_runs() if r.id > after_run_id]
    if not runs:
        return EMPTY_CURVE
    points = [(p["step"], p["loss"]) for p in runs[-1].loss_curve or [] if "loss" in p]
    return pd.DataFrame(points, columns=["step", "loss"]) if points else EMPTY_CURVE


def run_training(method: str, base: str, dataset: str | None, rank: float, lr: float,
                 max_steps: float) -> Iterator[tuple[str, pd.DataFrame, str]]:
    """Stream (log, loss curve, done flag); api ``/train``. A failed run ends in a message."""
    argv = train_argv(method, base, dataset, rank, lr, max_steps)
    with user_errors():
        last_run = max((r.id for r in list_runs()), default=0)
    yield "$ loraforge " + " ".join(argv[3:]), EMPTY_CURVE, ""
    update = None
    for update in stream_job(argv):
        yield update.log, EMPTY_CURVE, ""
    assert update is not None
    if not update.ok:
        gr.Warning(f"Training failed (exit {update.returncode}); see the log.")
        yield update.log + f"\n✗ exit {update.returncode}", EMPTY_CURVE, "failed"
        return
    with user_errors():
        curve = _newest_loss_curve(last_run)
    yield update.log + "\n✓ done", curve, "ok"


def form_choices() -> tuple[gr.Dropdown, gr.Dropdown]:
    with user_errors():
        bases = [b.name for b in list_bases()]
        snapshots = ["", *(s.name for s in reversed(list_snapshots()))]
    return gr.Dropdown(choices=bases, value=bases[0] if bases else None), gr.Dropdown(
        choices=snapshots, value=""
    )


def build_train_tab() -> TrainTab:
    """Lay out the Train tab (api names: ``train``, ``train_choices``)."""
    with gr.Tab(I18N("tab_train"), id="train"):
        with gr.Row():
            method = gr.Dropdown(choices=_methods(), value="lora", label=I18N("method"))
            base = gr.Dropdown(choices=[], label=I18N("base"), allow_custom_value=True)
            dataset = gr.Dropdown(choices=[""], value="", label=I18N("dataset"),
                                  allow_custom_value=True)
        with gr.Row():
            rank = gr.Number(8, label=I18N("rank"), precision=0, minimum=1)
            lr = gr.Number(3e-3, label=I18N("lr"), minimum=0)
            max_steps = gr.Number(30, label=I18N("steps"), precision=0, minimum=1)
        with gr.Row():
            refresh = gr.Button(I18N("refresh"), size="sm")
            start = gr.Button(I18N("start_training"), variant="primary")
        log = gr.Textbox(label=I18N("log"), lines=12, max_lines=12, autoscroll=True)
        curve = gr.LinePlot(EMPTY_CURVE, x="step", y="loss", label=I18N("loss_curve"))
        done = gr.Textbox(visible=False)
    refresh.click(form_choices, outputs=[base, dataset], api_name="train_choices", queue=False)
    start.click(run_training, inputs=[method, base, dataset, rank, lr, max_steps],
                outputs=[log, curve, done], api_name="train", concurrency_limit=1,
                concurrency_id="train")
    return TrainTab(done, [base, dataset])
