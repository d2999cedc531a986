"""``loraforge demo``: the whole pipeline on the embedded defaults, one stage at a time.

Serve the bundled MedQuAD site → crawl it with Scrapy → build a snapshot → build (or
reuse) the tiny base → train a LoRA adapter → open the chat app. Each stage reports its
wall time, and a re-run reuses the base, snapshot and adapter it already recorded.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

console = Console()


@dataclass
class DemoConfig:
    base: str = field(default="tiny", metadata={"help": "Base model: 'tiny' builds one locally."})
    base_steps: int = field(default=200, metadata={"help": "Pretraining steps of the tiny base."})
    max_pages: int = field(default=0, metadata={"help": "Pages to crawl; 0 crawls the whole site."})
    limit: int = field(default=48, metadata={"help": "QA pairs in the demo snapshot."})
    max_answer_words: int = field(default=120, metadata={
        "help": "Keep QA pairs whose answer fits in a short training window."})
    train_steps: int = field(default=200, metadata={"help": "LoRA optimizer steps."})
    max_length: int = field(default=256, metadata={"help": "Tokens per training example."})
    snapshot: str = field(default="demo", metadata={"help": "Name of the demo snapshot."})
    adapter: str = field(default="demo-lora", metadata={"help": "Name of the demo adapter."})
    seed: int = field(default=0, metadata={"help": "Seed for the split, base and training."})


@dataclass
class DemoResult:
    crawl_run_id: int
    snapshot_id: int
    base_id: int
    adapter_id: int
    stage_seconds: dict[str, float]


class StageTimer:
    """Prints a header per stage and keeps each stage's wall time."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, number: int, total: int, title: str) -> Iterator[None]:
        console.rule(f"[bold]Stage {number}/{total}: {title}")
        start = time.perf_counter()
        yield
        self.seconds[title] = time.perf_counter() - start
        console.print(f"[green]✓[/] {title} in {self.seconds[title]:.1f} s")

    def table(self) -> Table:
        table = Table("stage", "seconds", title="Demo stage times")
        for title, seconds in self.seconds.items():
            table.add_row(title, f"{seconds:.1f}")
        table.add_row("[bold]total", f"[bold]{sum(self.seconds.values()):.1f}")
        return table


def run_pipeline(config: DemoConfig, timer: StageTimer | None = None,
                 total_stages: int = 5) -> DemoResult:
    """Run the five data/model stages; the caller decides whether to open the UI."""
    from crawlers.demo_site import serve
    from crawlers.run import run_crawl
    from registry import db

    timer = timer or StageTimer()
    db.upgrade()

    with timer.stage(1, total_stages, "serve and crawl the demo site"):
        with serve() as site_url:
            console.print(f"demo site at {site_url} (bundled MedQuAD subset, CC BY 4.0)")
            args = {"sitemap_url": f"{site_url}/sitemap.xml"}
            if config.max_pages:
                args["max_pages"] = str(config.max_pages)
            crawl_run_id = run_crawl("qa", args)

    with timer.stage(2, total_stages, "build the dataset snapshot"):
        snapshot_id = _snapshot(config)

    with timer.stage(3, total_stages, f"base model ({config.base})"):
        base_id = _base(config)

    with timer.stage(4, total_stages, "train the LoRA adapter"):
        adapter_id = _adapter(config)

    return DemoResult(crawl_run_id, snapshot_id, base_id, adapter_id, dict(timer.seconds))


def _reuse_or(find: Callable[[], Any | None], build: Callable[[], int], what: str) -> int:
    found = find()
    if found is not None:
        console.print(f"reusing {what} recorded earlier (id {found})")
        return found
    return build()


def _id_or_none(record: Any | None) -> int | None:
    return None if record is None else record.id


def _snapshot(config: DemoConfig) -> int:
    from registry.snapshots import find_snapshot
    from trainers.dataset import build_snapshot

    return _reuse_or(
        lambda: _id_or_none(find_snapshot(config.snapshot)),
        lambda: build_snapshot(name=config.snapshot, limit=config.limit, seed=config.seed,
                               max_answer_words=config.max_answer_words),
        f"snapshot {config.snapshot!r}",
    )


def _base(config: DemoConfig) -> int:
    from registry.bases import find_base
    from trainers.base_model import register_base

    if config.base != "tiny":
        return _reuse_or(lambda: _id_or_none(find_base(config.base)),
                         lambda: register_base(config.base, config.base), f"base {config.base!r}")
    return _reuse_or(
        lambda: _id_or_none(find_base("tiny")),
        lambda: _build_tiny_base(config),
        "the tiny base",
    )


def _build_tiny_base(config: DemoConfig) -> int:
    from trainers.base_model import build_tiny_base
    from trainers.cli import pretrain_progress

    with pretrain_progress(config.base_steps) as on_step:
        return build_tiny_base(name="tiny", steps=config.base_steps, seed=config.seed,
                               progress=on_step, pretrain_snapshot=config.snapshot)


def _adapter(config: DemoConfig) -> int:
    from registry.adapters import list_adapters
    from trainers.run import run_training

    overrides = {"max_steps": config.train_steps, "max_length": config.max_length,
                 "seed": config.seed}
    return _reuse_or(
        lambda: next((a.id for a in list_adapters() if a.name == config.adapter), None),
        lambda: run_training(method="lora", base=config.base, snapshot=config.snapshot,
                             adapter_name=config.adapter, overrides=overrides),
        f"adapter {config.adapter!r}",
    )


def demo_command(
    base: str = typer.Option("tiny", help="Base model: 'tiny' builds one locally, or a Hub "
                             "id / local path."),
    limit: int = typer.Option(DemoConfig.limit, help="QA pairs in the demo snapshot."),
    base_steps: int = typer.Option(DemoConfig.base_steps, help="Pretraining steps of the "
                                   "tiny base."),
    train_steps: int = typer.Option(DemoConfig.train_steps, help="LoRA optimizer steps."),
    max_pages: int = typer.Option(0, help="Pages to crawl; 0 crawls the whole demo site."),
    ui: bool = typer.Option(True, help="Open the chat app at the end (--no-ui to stop there)."),
    host: str = typer.Option("127.0.0.1", help="Address the chat app binds."),
    port: int = typer.Option(7860, help="Port of the chat app."),
) -> None:
    """Run the end-to-end demo: serve the demo site, crawl, build a dataset, build the tiny
    base, train a LoRA adapter and open the chat app."""
    config = DemoConfig(base=base, limit=limit, base_steps=base_steps, train_steps=train_steps,
                        max_pages=max_pages)
    timer = StageTimer()
    total = 5 if ui else 4
    result = run_pipeline(config, timer, total_stages=total)
    console.print(timer.table())
    console.print(f"adapter id {result.adapter_id} is in the registry: `loraforge adapters list`")
    if ui:
        from ui.cli import launch

        console.rule(f"[bold]Stage 5/{total}: chat")
        launch(host=host, port=port, auth=None, share=False, block=True)
