"""The Adapters tab: the registry with metrics, one adapter's lineage and loss curve, Hub push."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr
import pandas as pd

from core.errors import LoraForgeError
from publishing.hub import push_adapter
from registry.adapters import get_adapter, get_run, list_adapters
from registry.evaluations import latest_for_adapter
from registry.lineage import adapter_lineage
from ui.components.common import user_errors
from ui.i18n import I18N

TABLE_COLUMNS = [
    "label", "base", "method", "snapshot", "final_loss", "trainable_%", "peak_memory_mb",
    "train_seconds", "tokens_per_s", "eval_rouge_l", "eval_rouge_l_vs_base", "eval_similarity",
    "eval_similarity_vs_base", "eval_exact_match", "created",
]


@dataclass
class AdaptersTab:
    outputs: list[gr.components.Component]  # what ``refresh_registry`` fills


def _mb(value: object) -> float | None:
    return round(float(value) / 2**20, 1) if isinstance(value, int | float) else None


def adapter_table() -> pd.DataFrame:
    """One row per adapter with the metrics its training run recorded (blank when none)."""
    rows = []
    for a in list_adapters():
        m = a.metrics or {}
        rows.append([
            a.label, a.base_name, a.method, a.snapshot_name or "", m.get("final_loss"),
            m.get("trainable_percent"), _mb(m.get("peak_memory_bytes")), m.get("wall_seconds"),
            m.get("tokens_per_second"), *_eval_columns(a.id),
            a.created_at.strftime("%Y-%m-%d %H:%M") if a.created_at else "",
        ])
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def _eval_columns(adapter_id: int) -> list[float | None]:
    """ROUGE-L, its gain over the base, similarity, its gain, exact match; blank when none."""
    found = latest_for_adapter(adapter_id)
    if found is None:
        return [None] * 5
    mine, base = found

    def gain(key: str) -> float | None:
        if base is None or mine.metrics.get(key) is None or base.metrics.get(key) is None:
            return None
        return round(mine.metrics[key] - base.metrics[key], 4)

    m = mine.metrics
    return [m.get("rouge_l"), gain("rouge_l"), m.get("answer_similarity"),
            gain("answer_similarity"), m.get("exact_match")]


def _measure_frame(key: str, scale: float = 1.0) -> pd.DataFrame:
    rows = [[a.label, round(float(a.metrics[key]) * scale, 2)] for a in list_adapters()
            if isinstance((a.metrics or {}).get(key), int | float)]
    return pd.DataFrame(rows, columns=["adapter", "value"])


def memory_frame() -> pd.DataFrame:
    """(adapter, peak memory in MB) for its own bar chart: MB and seconds share no axis."""
    return _measure_frame("peak_memory_bytes", 1 / 2**20)


def time_frame() -> pd.DataFrame:
    """(adapter, training time in s) for its own bar chart."""
    return _measure_frame("wall_seconds")


def loss_frame(label: str | None) -> pd.DataFrame:
    """The training loss by step of the run that made ``label`` (empty when it has none)."""
    empty = pd.DataFrame({"step": [], "loss": []})
    if not label:
        return empty
    record = get_adapter(label)
    if record.training_run_id is None:
        return empty
    curve = get_run(record.training_run_id).loss_curve or []
    points = [(p["step"], p["loss"]) for p in curve if "loss" in p and "step" in p]
    return pd.DataFrame(points, columns=["step", "loss"]) if points else empty


def lineage_markdown(label: str | None) -> str:
    """Where an adapter came from: base, run, snapshot, crawl runs and a few source URLs."""
    if not label:
        return ""
    lin = adapter_lineage(label)
    lines = [f"### {lin.adapter_label}", f"- base: **{lin.base_name}** ({lin.base_source})"]
    if lin.run is not None:
        cfg = ", ".join(f"{k}={v}" for k, v in sorted(lin.run.config.items())[:8])
        lines.append(f"- run #{lin.run.id}: {lin.run.method}, {lin.run.status} ({cfg})")
    if lin.snapshot is not None:
        lines.append(f"- snapshot **{lin.snapshot.name}** ({lin.snapshot.kind}), splits "
                     f"{lin.snapshot.split_sizes}")
    lines.append(f"- {lin.qa_pairs} QA pairs from {lin.articles} articles; topics: "
                 f"{', '.join(lin.topics[:10]) or '—'}")
    for run in lin.crawl_runs:
        lines.append(f"- crawl run #{run.id}: {run.spider} ({run.status}) {run.source or ''}")
    lines += [f"  - {url}" for url in lin.urls[:5]]
    if lin.source_repo:
        lines.append(f"- pulled from {lin.source_repo}@{lin.source_revision}")
    return "\n".join(lines)


def show_adapter(label: str | None) -> tuple[str, pd.DataFrame]:
    with user_errors():
        return lineage_markdown(label), loss_frame(label)


def push(label: str | None, repo_id: str | None, private: bool) -> str:
    """Push with the registry's push; the outcome, good or bad, is a message, not an exception."""
    if not label:
        return "⚠️ Pick an adapter first."
    if not (repo_id or "").strip():
        return "⚠️ Give the Hub repository as owner/name."
    try:
        publication = push_adapter(label, repo_id.strip(), private=private)
    except LoraForgeError as exc:
        return f"⚠️ {exc}"
    return f"✅ Pushed {label} to {publication.url or publication.repo_id}"


def refresh_registry() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, gr.Dropdown]:
    with user_errors():
        labels = [a.label for a in list_adapters()]
        return adapter_table(), memory_frame(), time_frame(), gr.Dropdown(choices=labels)


def build_adapters_tab() -> AdaptersTab:
    """Lay out the Adapters tab (api names: ``registry``, ``adapter_detail``, ``push``)."""
    with gr.Tab(I18N("tab_adapters"), id="adapters"):
        refresh = gr.Button(I18N("refresh"), size="sm")
        table = gr.Dataframe(value=adapter_table, label=I18N("registry"), interactive=False)
        with gr.Row():
            memory = gr.BarPlot(memory_frame, x="adapter", y="value", y_title="MB",
                                label=I18N("memory_chart"))
            seconds = gr.BarPlot(time_frame, x="adapter", y="value", y_title="s",
                                 label=I18N("time_chart"))
        picked = gr.Dropdown(choices=[a.label for a in list_adapters()], value=None,
                             label=I18N("adapter"))
        with gr.Row():
            lineage = gr.Markdown(label=I18N("lineage"))
            loss = gr.LinePlot(pd.DataFrame({"step": [], "loss": []}), x="step", y="loss",
                               label=I18N("loss_curve"))
        with gr.Row():
            repo_id = gr.Textbox(label=I18N("repo_id"), scale=3)
            private = gr.Checkbox(label=I18N("private"), value=True, scale=1)
            push_button = gr.Button(I18N("push"), scale=1)
        push_status = gr.Markdown()
    refresh.click(refresh_registry, outputs=[table, memory, seconds, picked],
                  api_name="registry")
    picked.change(show_adapter, inputs=picked, outputs=[lineage, loss], api_name="adapter_detail")
    push_button.click(push, inputs=[picked, repo_id, private], outputs=push_status,
                      api_name="push", concurrency_limit=1)
    return AdaptersTab([table, memory, seconds, picked])
