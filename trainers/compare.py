"""``loraforge train compare``: train a grid of methods × ranks and write the study's table.

Each cell runs as its own ``loraforge train`` process, so on CPU its peak resident memory is
that run's alone (a process's peak RSS never goes down, so cells sharing one process would
all report the largest). The report is Markdown plus PNG bar charts of memory and time.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import Progress

from core.jobs import Job, JobUpdate, loraforge_argv, progress_text
from trainers.errors import TrainerError

console = Console()

COLUMNS = [  # (header, metric key, format)
    ("trainable params", "trainable_params", "{:,}"),
    ("trainable %", "trainable_percent", "{:.3f}"),
    ("peak memory (MiB)", "peak_memory_bytes", "mib"),
    ("time (s)", "wall_seconds", "{:.1f}"),
    ("samples/s", "samples_per_second", "{:.2f}"),
    ("tokens/s", "tokens_per_second", "{:.0f}"),
    ("FLOPs", "total_flos", "{:.3g}"),
    ("final loss", "final_loss", "{:.3f}"),
    ("eval loss", "eval_loss", "{:.3f}"),
    ("perplexity", "perplexity", "{:.2f}"),
    # The trainer's end-of-run check on its first few test questions, not `loraforge eval`'s
    # full held-out measurement: named apart so the two are never read as one figure.
    ("check ROUGE-L", "rouge_l", "{:.3f}"),
    ("check exact match", "exact_match", "{:.2f}"),
]
CHECK_NOTE = ("check ROUGE-L and exact match: the trainer's greedy answers to the first "
              "`generate_examples` test questions (8 by default) at `max_new_tokens`; "
              "`loraforge eval` scores every held-out question against the base.")


@dataclass
class Cell:
    method: str
    rank: int | None
    adapter: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    adapter_id: int | None = None

    @property
    def label(self) -> str:
        return self.method if self.rank is None else f"{self.method} r{self.rank}"


def plan_grid(methods: list[str], ranks: list[int]) -> list[Cell]:
    """Every method at every rank; methods without a rank (full) once."""
    from trainers.discovery import method_has_rank

    cells = []
    for method in methods:
        cells += [Cell(method, r) for r in ranks] if method_has_rank(method) \
            else [Cell(method, None)]
    return cells


def train_cell(cell: Cell, base: str, dataset: str | None, settings: list[str], prefix: str,
               log: Path, on_update: Callable[[JobUpdate], None] | None = None) -> Cell:
    """Train one cell as a job (its whole output to ``log``); its result event names its
    adapter, or says why it failed. ``on_update`` sees every progress event and log line."""
    name = f"{prefix}-{cell.method}" + (f"-r{cell.rank}" if cell.rank is not None else "")
    args = ["train", "--method", cell.method, "--base", base, "--name", name,
            "--set", "progress_bar=false"]
    if dataset:
        args += ["--dataset", dataset]
    if cell.rank is not None:
        args += ["--rank", str(cell.rank)]
    for item in settings:
        args += ["--set", item]
    # Sleeping OpenMP waits: spinning ones stall the tiny model's many small ops whenever
    # another program holds a core (a setting of the user's own wins).
    env = {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    update = None
    for update in Job(loraforge_argv(*args), env, log_file=log).updates():
        if on_update is not None:
            on_update(update)
    assert update is not None and update.result is not None
    result = update.result
    if not result.ok:
        cell.error = result.error or f"failed; see {log}"
        return cell
    cell.adapter, cell.metrics = result.data["adapter"], result.data.get("metrics", {})
    cell.adapter_id = result.data.get("adapter_id")
    return cell


def _fmt(value: Any, spec: str) -> str:
    if value is None:
        return "-"
    if spec == "mib":
        return f"{value / 2**20:,.0f}"
    try:
        return spec.format(value)
    except (ValueError, TypeError):
        return str(value)


def markdown_report(cells: list[Cell], title: str, notes: list[str],
                    columns: list[tuple[str, str, str]] = COLUMNS) -> str:
    header = ["method", "rank", *(c[0] for c in columns)]
    lines = [f"# {title}", "", *notes, "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for cell in cells:
        rank = "-" if cell.rank is None else str(cell.rank)
        if cell.error:
            lines.append(f"| {cell.method} | {rank} | failed: {cell.error} |"
                         + " |" * (len(columns) - 1))
            continue
        values = [_fmt(cell.metrics.get(key), spec) for _, key, spec in columns]
        lines.append("| " + " | ".join([cell.method, rank, *values]) + " |")
    return "\n".join(lines) + "\n"


def bar_chart(cells: list[Cell], key: str, ylabel: str, path: Path, scale: float = 1.0) -> None:
    """Grouped bars: one group per method, one bar per rank."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [c for c in cells if not c.error and c.metrics.get(key) is not None]
    methods = list(dict.fromkeys(c.method for c in done))
    ranks = list(dict.fromkeys(c.rank for c in done))
    width = 0.8 / max(len(ranks), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(methods)), 4))
    for i, rank in enumerate(ranks):
        xs, ys = [], []
        for j, method in enumerate(methods):
            match = [c for c in done if c.method == method and c.rank == rank]
            if match:
                xs.append(j + i * width)
                ys.append(match[0].metrics[key] * scale)
        ax.bar(xs, ys, width, label="no rank" if rank is None else f"r={rank}")
    ax.set_xticks([j + width * (len(ranks) - 1) / 2 for j in range(len(methods))], methods)
    ax.set_ylabel(ylabel)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def compare(methods: list[str], ranks: list[int], base: str, dataset: str | None,
            settings: list[str], out_dir: Path) -> Path:
    """Train the grid, write report.md, memory.png and time.png into ``out_dir``; returns it."""
    if not methods or not ranks or any(r < 1 for r in ranks):
        raise TrainerError("give at least one method and ranks of at least 1")
    cells = plan_grid(methods, ranks)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "logs").mkdir(exist_ok=True)
    prefix = f"cmp{int(time.time())}"
    with Progress(console=console) as progress:
        task = progress.add_task("training grid", total=len(cells))
        for cell in cells:
            progress.update(task, description=f"training {cell.label}")
            train_cell(cell, base, dataset, settings, prefix,
                       out_dir / "logs" / f"{cell.label.replace(' ', '-')}.log",
                       lambda update, label=cell.label: progress.update(
                           task, description=f"{label}: {progress_text(update.progress)}"))
            progress.advance(task)
    kinds = {c.metrics.get("peak_memory_kind") for c in cells if c.metrics}
    notes = [f"Base `{base}`, dataset `{dataset or 'newest snapshot'}`, "
             f"settings: {' '.join(settings) or 'defaults'}.",
             "Peak memory is " + ("CUDA max allocated" if kinds == {"cuda_allocated"} else
                                  "the process's peak resident set size (one process per cell)")
             + ".", CHECK_NOTE,
             "![peak memory](memory.png) ![time](time.png)"]
    (out_dir / "report.md").write_text(markdown_report(cells, "Training methods compared", notes))
    bar_chart(cells, "peak_memory_bytes", "peak memory (MiB)", out_dir / "memory.png",
              scale=1 / 2**20)
    bar_chart(cells, "wall_seconds", "training time (s)", out_dir / "time.png")
    return out_dir


def compare_command(
    methods: str = typer.Option("lora,qlora,loraplus,pissa,dora,full", "--methods",
                                help="Comma-separated trainer names."),
    ranks: str = typer.Option("4,8,16", "--ranks", help="Comma-separated LoRA ranks."),
    base: str = typer.Option("tiny", "--base", help="Registered base model name."),
    dataset: str | None = typer.Option(None, "--dataset",
                                       help="Snapshot name (default: the newest)."),
    settings: Annotated[list[str] | None, typer.Option(
        "--set", help="Config field for every cell as key=value (repeatable), "
        "e.g. --set max_steps=100.")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Report directory (default: LORAFORGE_HOME/reports/compare-TIMESTAMP)."
    )] = None,
) -> None:
    """Train every method at every rank and write a Markdown report with bar charts."""
    from core.settings import get_settings

    try:
        rank_list = [int(r) for r in ranks.split(",") if r.strip()]
    except ValueError as exc:
        raise TrainerError(f"--ranks must be integers like 4,8,16, got {ranks!r}") from exc
    method_list = [m.strip() for m in methods.split(",") if m.strip()]
    out_dir = out or get_settings().home / "reports" / time.strftime("compare-%Y%m%d-%H%M%S")
    report = compare(method_list, rank_list, base, dataset, settings or [], out_dir)
    console.print(f"report → {report / 'report.md'} (charts: memory.png, time.png)")
