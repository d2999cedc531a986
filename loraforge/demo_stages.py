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

from registry.errors import LoraForgeError

if TYPE_CHECKING:
    from rich.table import Table

    from loraforge.demo import DemoConfig
    from registry.adapters import AdapterRecord
    from trainers.compare import Cell

console = Console()

NO_TOKEN_LINE = ("no Hugging Face token found, so nothing was pushed; run `hf auth login` "
                 "(or set HF_TOKEN) and re-run with --push {target}")
REPORT_NAME = "demo-comparison"


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
    from registry.hub import check_repo_id
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
    if config.clusters > config.limit:
        raise DemoError(f"--clusters {config.clusters} is more than --limit {config.limit}; "
                        "use at most one cluster per QA pair")
    if config.push is not None:
        check_repo_id(config.push)
        for method in config.methods:
            check_repo_id(push_target(config.push, method))


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
            "--max-answer-words", str(config.max_answer_words)]
    if config.clusters:
        args += ["--clusters", str(config.clusters),
                 "--per-cluster", str(max(1, config.limit // config.clusters))]
    else:
        args += ["--limit", str(config.limit)]
    run_loraforge(args)
    snapshot = find_snapshot(config.snapshot)
    if snapshot is None:
        raise DemoError(f"`loraforge data build` recorded no snapshot {config.snapshot!r}")
    counts = snapshot.counts
    how = (f"{len(counts.get('clusters', {}))} K-Means clusters of MiniLM embeddings"
           if config.clusters else "a random sample")
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


def train_args(config: DemoConfig, method: str) -> list[str]:
    settings = [f"max_steps={config.train_steps}", f"max_length={config.max_length}",
                f"seed={config.seed}", *config.settings]  # later --set values win
    return ["train", "--method", method, "--base", config.base, "--dataset", config.snapshot,
            "--name", config.adapter_name(method), *(a for s in settings for a in ("--set", s))]


def train_demo_adapter(config: DemoConfig, method: str) -> TrainedAdapter:
    """Reuse the recorded adapter, or train one in a child process whose progress bar shows."""
    from registry.adapters import list_runs

    start = time.perf_counter()
    found = find_demo_adapter(config, method)
    if found is not None:
        console.print(f"reusing adapter {found.label} recorded earlier (id {found.id})")
        return TrainedAdapter(method, found.id, 0.0, reused=True)
    last_run = max((r.id for r in list_runs()), default=0)
    code = run_loraforge(train_args(config, method), check=False)
    seconds = time.perf_counter() - start
    found = find_demo_adapter(config, method)
    if code == 0 and found is not None:
        console.print(f"[green]✓[/] {found.label} in {seconds:.1f} s")
        return TrainedAdapter(method, found.id, seconds, reused=False)
    failed = [r for r in list_runs() if r.id > last_run and r.error]
    # A run row carries the error; without one the child stopped on its checks, and its own
    # error line is in the output above.
    error = failed[-1].error if failed else (
        f"stopped before training (exit {code}); `loraforge {' '.join(train_args(config, method))}`"
        " shows why")
    console.print(f"[red]{config.adapter_name(method)} failed:[/] {error}")
    return TrainedAdapter(method, None, seconds, reused=False, error=error)


# -- stage 6: the comparison report --------------------------------------------------------------

def write_comparison(config: DemoConfig, adapter_ids: dict[str, int], failed: dict[str, str],
                     out_dir: Path) -> Path:
    """``train compare``'s table and bar charts for the demo's adapters, plus their loss curves."""
    from registry.adapters import get_adapter, get_run
    from trainers.compare import Cell, bar_chart, markdown_report

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
    notes = [*_report_notes(config, cells, configs),
             " ".join(f"![{k}]({p.name})" for k, p in charts.items())]
    notes = [line for note in notes for line in (note, "")][:-1]  # one paragraph each
    report = out_dir / f"{REPORT_NAME}.md"
    report.write_text(markdown_report(cells, "Demo: LoRA, LoRA+ and QLoRA compared", notes))
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
            + "; ROUGE-L and exact match are on the snapshot's test split."]


def comparison_table(cells: list[Cell]) -> Table:
    """The report's headline columns as a terminal table."""
    from rich.table import Table

    # _fmt is compare's number formatting; reusing it keeps the two tables identical.
    from trainers.compare import COLUMNS, _fmt

    shown = ("trainable params", "peak memory (MiB)", "time (s)", "final loss", "eval loss",
             "ROUGE-L")
    columns = [c for c in COLUMNS if c[0] in shown]
    table = Table("method", "adapter", *(c[0] for c in columns), title="Demo adapters compared")
    for cell in cells:
        if cell.error:
            table.add_row(cell.method, f"[red]failed: {cell.error}")
        else:
            table.add_row(cell.method, cell.adapter,
                          *(_fmt(cell.metrics.get(key), spec) for _, key, spec in columns))
    return table


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
    from registry.adapter_ops import show_adapter
    from registry.hub import HubError, push_adapter, resolve_endpoint

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
