"""``loraforge data``, ``loraforge base`` and ``loraforge train`` command groups."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from trainers.config import LoraTrainConfig

console = Console()

data_app = typer.Typer(help="Build dataset snapshots from the store's QA pairs.",
                       no_args_is_help=True)
base_app = typer.Typer(help="Build, register and list base models.", no_args_is_help=True)
train_app = typer.Typer(help="Train adapters on a base model and a dataset snapshot.",
                        no_args_is_help=True)

_LORA = LoraTrainConfig()


def _help(field: str) -> str:
    return LoraTrainConfig.__dataclass_fields__[field].metadata["help"]


@data_app.command("build")
def data_build(
    name: str | None = typer.Option(None, "--name", help="Snapshot name [default: qa-<hash>]."),
    test_fraction: float = typer.Option(0.1, "--test-fraction", help="Share held out for test."),
    seed: int = typer.Option(0, "--seed", help="Seed for sampling and the train/test split."),
    limit: int | None = typer.Option(None, "--limit", help="Use at most this many QA pairs "
                                     "(a seeded sample) [default: all]."),
    system_prompt: str | None = typer.Option(None, "--system-prompt",
                                             help="System message to open every chat with."),
    topic: str | None = typer.Option(None, "--topic",
                                     help="Only pairs whose topic or focus area is this."),
    max_answer_words: int | None = typer.Option(
        None, "--max-answer-words", help="Only pairs whose answer has at most this many words "
        "(short answers fit a small max length) [default: no limit]."),
) -> None:
    """Freeze the store's QA pairs into train.jsonl / test.jsonl chats."""
    from registry.snapshots import list_snapshots
    from trainers.dataset import build_snapshot

    with console.status("building snapshot…"):
        snapshot_id = build_snapshot(name=name, test_fraction=test_fraction, seed=seed,
                                     limit=limit, system_prompt=system_prompt, topic=topic,
                                     max_answer_words=max_answer_words)
    snap = next(s for s in list_snapshots() if s.id == snapshot_id)
    console.print(f"snapshot [bold]{snap.name}[/] (#{snap.id}): {snap.counts['train']} train, "
                  f"{snap.counts['test']} test → {snap.path}")


@data_app.command("list")
def data_list() -> None:
    """A table of dataset snapshots."""
    from registry.db import ensure_schema
    from registry.snapshots import list_snapshots

    ensure_schema()
    table = Table("id", "name", "train", "test", "seed", "hash", "path")
    for s in list_snapshots():
        table.add_row(str(s.id), s.name, str(s.counts.get("train", 0)),
                      str(s.counts.get("test", 0)), str(s.seed), s.content_hash[:12], s.path or "-")
    console.print(table)


@contextmanager
def pretrain_progress(steps: int) -> Iterator[Callable[[int, int, float], None]]:
    """A progress bar with the running loss, for ``build_tiny_base(progress=...)``."""
    columns = (TextColumn("pretraining"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("pretrain", total=steps, loss="-")

        def on_step(step: int, total: int, loss: float) -> None:
            progress.update(task, completed=step, loss=f"{loss:.3f}")

        yield on_step


@base_app.command("init")
def base_init(
    name: str = typer.Option("tiny", "--name", help="Name to register the base under."),
    steps: int = typer.Option(200, "--steps", help="Pretraining steps."),
    vocab_size: int = typer.Option(2048, "--vocab-size", help="BPE vocabulary size."),
    hidden_size: int = typer.Option(128, "--hidden-size", help="Hidden size (multiple of 32)."),
    layers: int = typer.Option(4, "--layers", help="Transformer layers."),
    seq_len: int = typer.Option(256, "--seq-len", help="Pretraining window in tokens."),
    seed: int = typer.Option(0, "--seed", help="Seed for init and batches."),
    pretrain_snapshot: str | None = typer.Option(
        None, "--pretrain-snapshot", help="Pretrain on this snapshot's train split instead of "
        "the whole store (the tokenizer still learns from the whole store)."),
) -> None:
    """Train a tiny Llama and its tokenizer on the store's text (about a minute on a CPU)."""
    from registry.bases import find_base
    from trainers.base_model import build_tiny_base

    with pretrain_progress(steps) as on_step:
        build_tiny_base(name=name, steps=steps, vocab_size=vocab_size, hidden_size=hidden_size,
                        layers=layers, seq_len=seq_len, seed=seed, progress=on_step,
                        pretrain_snapshot=pretrain_snapshot)
    base = find_base(name)
    assert base is not None
    console.print(f"base [bold]{base.name}[/]: {base.parameters:,} parameters, final loss "
                  f"{base.config['final_loss']:.3f}, {base.config['build_seconds']} s "
                  f"→ {base.path}")


@base_app.command("add")
def base_add(
    name: str = typer.Argument(..., help="Name to register the base under."),
    source: str = typer.Argument(..., help="A Hub id (org/model) or a local model directory."),
) -> None:
    """Register an existing model as a base."""
    from trainers.base_model import register_base

    base_id = register_base(name, source)
    console.print(f"base [bold]{name}[/] (#{base_id}) → {source}")


@base_app.command("list")
def base_list() -> None:
    """A table of base models."""
    from registry.bases import list_bases
    from registry.db import ensure_schema

    ensure_schema()
    table = Table("id", "name", "source", "architecture", "parameters", "path")
    for b in list_bases():
        table.add_row(str(b.id), b.name, b.source, b.architecture or "-",
                      f"{b.parameters:,}" if b.parameters else "-", b.path or "-")
    console.print(table)


def _summary(adapter_id: int) -> Table:
    from registry.adapters import get_adapter

    record = get_adapter(adapter_id)
    title = f"{record.label} ({record.method} on {record.base_name})"
    table = Table("metric", "value", title=title)
    for key, value in record.metrics.items():
        shown = f"{value:,}" if isinstance(value, int) else str(value)
        table.add_row(key, shown)
    table.add_row("path", record.path)
    return table


@train_app.callback(invoke_without_command=True)
def train(
    ctx: typer.Context,
    method: str = typer.Option("lora", "--method", help="Trainer backend (entry-point name)."),
    base: str = typer.Option("tiny", "--base", help="Registered base model name."),
    dataset: str | None = typer.Option(None, "--dataset",
                                       help="Snapshot name [default: the newest]."),
    name: str | None = typer.Option(None, "--name", help="Adapter name [default: BASE-METHOD]."),
    rank: int = typer.Option(_LORA.rank, "--rank", help=_help("rank")),
    alpha: float = typer.Option(_LORA.alpha, "--alpha", help=_help("alpha")),
    lr: float = typer.Option(_LORA.learning_rate, "--lr", help=_help("learning_rate")),
    max_steps: int | None = typer.Option(None, "--max-steps", help=_help("max_steps")),
    epochs: float = typer.Option(_LORA.epochs, "--epochs", help=_help("epochs")),
    batch_size: int = typer.Option(_LORA.batch_size, "--batch-size", help=_help("batch_size")),
    max_length: int = typer.Option(_LORA.max_length, "--max-length", help=_help("max_length")),
) -> None:
    """Train an adapter, register it as NAME:vN and print its metrics."""
    if ctx.invoked_subcommand is not None:
        return
    from trainers.run import run_training

    overrides: dict[str, Any] = {"rank": rank, "alpha": alpha, "learning_rate": lr,
                                 "max_steps": max_steps, "epochs": epochs,
                                 "batch_size": batch_size, "max_length": max_length}
    with console.status(f"training {method} adapter on {base}…"):
        adapter_id = run_training(method=method, base=base, snapshot=dataset, adapter_name=name,
                                  overrides=overrides)
    console.print(_summary(adapter_id))
