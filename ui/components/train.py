"""The Train tab: start ``loraforge train`` as a job (core.jobs), follow its progress events
(step/total, loss, ETA) and show the run and adapter its result names; cancel or resume it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import gradio as gr
import pandas as pd

from core.jobs import Job, JobUpdate, loraforge_argv, progress_text
from registry.adapters import get_run
from registry.bases import list_bases
from registry.snapshots import list_snapshots
from ui.components.common import user_errors
from ui.i18n import I18N

EMPTY_CURVE = pd.DataFrame({"step": [], "loss": []})
UPDATE_SECONDS = 0.2  # the shortest time between two updates of a training's page


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
               max_steps: float, low_memory: bool = False) -> list[str]:
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
    if low_memory:
        argv.append("--low-memory")
    return loraforge_argv(*argv)


def _curve(points: list[dict]) -> pd.DataFrame:
    rows = [(p["step"], p["loss"]) for p in points if p.get("loss") is not None]
    return pd.DataFrame(rows, columns=["step", "loss"]) if rows else EMPTY_CURVE


TrainOutputs = tuple[str, pd.DataFrame, str, str, str]


# Each page's (session's) running training, so that its Cancel stops that job and no other.
_RUNNING: dict[str, Job] = {}


def follow_training(argv: list[str], progress: gr.Progress,
                    session: str | None) -> Iterator[TrainOutputs]:
    """Stream (log, loss curve, progress line, result, done flag) of one training job.

    The result is the job's own (its run and adapter, from its result event), so two
    trainings started at once each show theirs. Closing the page or Cancel stops the job.
    """
    points: list[dict] = []
    yield "$ loraforge " + " ".join(argv[3:]), EMPTY_CURVE, "starting…", "", ""
    job = Job(argv)
    if session:
        _RUNNING[session] = job
    try:
        yield from _follow(job, points, progress)
    finally:
        if session and _RUNNING.get(session) is job:
            del _RUNNING[session]


def _follow(job: Job, points: list[dict], progress: gr.Progress) -> Iterator[TrainOutputs]:
    update: JobUpdate | None = None
    shown = 0.0
    for update in job.updates():
        event = update.progress
        if event and (not points or points[-1] != event):
            points.append(event)
        # A fast training logs a line per step, and sending the page the log, the curve and
        # the progress bar for each one is work no reader can follow: the page gets the newest
        # state a few times a second instead.
        if update.result is None and time.monotonic() - shown >= UPDATE_SECONDS:
            shown = time.monotonic()
            if event:
                progress((event["step"], event["total"]), desc=progress_text(event),
                         unit="steps")
            yield update.log, _curve(points), progress_text(event), "", ""
    assert update is not None and update.result is not None
    result = update.result
    if not result.ok:
        gr.Warning(f"Training {result.status}: {result.error}")
        yield (update.log + f"\n✗ {result.status}: {result.error}", _curve(points),
               progress_text(update.progress), f"{result.status}: {result.error}", "failed")
        return
    with user_errors():  # the recorded curve: every logged step, not only those seen here
        run = get_run(result.data["run_id"]) if result.data.get("run_id") else None
    curve = _curve(run.loss_curve) if run is not None else _curve(points)
    label = result.data.get("adapter", "")
    yield (update.log + f"\n✓ done: {label}", curve, progress_text(update.progress),
           f"{label} (run #{result.data.get('run_id')})", "ok")


def run_training(method: str, base: str, dataset: str | None, rank: float, lr: float,
                 max_steps: float, request: gr.Request, low_memory: bool = False,
                 progress: gr.Progress = gr.Progress()  # noqa: B008
                 ) -> Iterator[TrainOutputs]:
    """Api ``/train``: (log, loss curve, progress line, result, done flag). ``low_memory``
    has a default, so API clients written before it existed keep working."""
    argv = train_argv(method, base, dataset, rank, lr, max_steps, low_memory)
    yield from follow_training(argv, progress, getattr(request, "session_hash", None))


def resume_training(request: gr.Request, progress: gr.Progress = gr.Progress()  # noqa: B008
                    ) -> Iterator[TrainOutputs]:
    """Api ``/resume_training``: finish the newest interrupted run from its last checkpoint,
    with its own method, data and config (``loraforge train --resume``)."""
    yield from follow_training(loraforge_argv("train", "--resume"), progress,
                               getattr(request, "session_hash", None))


def cancel_training(request: gr.Request) -> str:
    """Api ``/cancel_training``: stop this page's running training as Ctrl-C would; the run is
    marked failed ("interrupted") and keeps its checkpoints, which Resume continues from."""
    job = _RUNNING.get(getattr(request, "session_hash", None) or "")
    if job is None:
        return "no training of this page is running"
    job.cancel()
    return "cancelled: the run keeps its last checkpoint; Resume continues it"


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
            low_memory = gr.Checkbox(False, label=I18N("low_memory"))
        with gr.Row():
            refresh = gr.Button(I18N("refresh"), size="sm")
            start = gr.Button(I18N("start_training"), variant="primary")
            resume = gr.Button(I18N("resume_training"))
            cancel = gr.Button(I18N("cancel_training"), variant="stop")
        with gr.Row():
            status = gr.Textbox(label=I18N("progress"), interactive=False,
                                elem_id="train-progress")
            result = gr.Textbox(label=I18N("trained_adapter"), interactive=False,
                                elem_id="train-result")
        log = gr.Textbox(label=I18N("log"), lines=12, max_lines=12, autoscroll=True)
        curve = gr.LinePlot(EMPTY_CURVE, x="step", y="loss", label=I18N("loss_curve"))
        done = gr.Textbox(visible=False)
    outputs = [log, curve, status, result, done]
    refresh.click(form_choices, outputs=[base, dataset], api_name="train_choices", queue=False)
    # Two users may train at once; each job reports its own result, so neither sees the other's.
    start.click(run_training, inputs=[method, base, dataset, rank, lr, max_steps, low_memory],
                outputs=outputs, api_name="train", concurrency_limit=2,
                concurrency_id="train")
    resume.click(resume_training, outputs=outputs, api_name="resume_training",
                 concurrency_limit=2, concurrency_id="train")
    # Not ``cancels=``: the job is stopped, and the training's own stream then ends in
    # "✗ cancelled", so the log says what happened.
    cancel.click(cancel_training, outputs=[status], api_name="cancel_training",
                 concurrency_id="cancel")
    return TrainTab(done, [base, dataset])
