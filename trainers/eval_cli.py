"""``loraforge eval``: adapters against their base on a snapshot's held-out questions."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from core import jobs
from trainers.eval_config import EvalConfig

if TYPE_CHECKING:
    from trainers.evaluation import EvalPlan

console = Console()
_DEFAULTS = EvalConfig()


def _help(name: str) -> str:
    return EvalConfig.__dataclass_fields__[name].metadata["help"]


def results_table(batch_id: str) -> Table:
    """One row per model of an evaluation, the base first, with its gain over the base."""
    from registry.evaluations import batch

    rows = batch(batch_id)
    first = rows[0]
    base = next((r for r in rows if r.adapter_label is None), None)
    table = Table("model", "ROUGE-L", "Δ vs base", "exact match", "answer similarity",
                  "Δ vs base", "latency (s/answer)", "tokens/s",
                  title=f"{first.snapshot_name} / {first.split}: {first.examples_count} "
                        f"questions, {first.settings.get('max_new_tokens')} new tokens, greedy")

    def delta(record, key: str) -> str:
        if base is None or record is base or record.metrics.get(key) is None:
            return "-"
        return f"{record.metrics[key] - base.metrics[key]:+.3f}"

    for r in rows:
        m = r.metrics
        table.add_row(r.model_label, f"{m['rouge_l']:.3f}", delta(r, "rouge_l"),
                      f"{m['exact_match']:.3f}", f"{m['answer_similarity']:.3f}",
                      delta(r, "answer_similarity"), f"{m['latency_seconds']:.2f}",
                      f"{m['tokens_per_second']:.1f}")
    return table


def examples_table(batch_id: str, count: int) -> Table | None:
    """The first ``count`` questions with the reference and every model's answer side by side."""
    from registry.evaluations import batch

    rows = batch(batch_id)
    shown = min(count, min((len(r.examples) for r in rows), default=0))
    if shown == 0:
        return None
    table = Table("question", "reference", *(r.model_label for r in rows),
                  title="answers side by side", show_lines=True)
    for i in range(shown):
        example = rows[0].examples[i]
        table.add_row(example["question"], example["reference"],
                      *(r.examples[i]["predicted"] for r in rows))
    return table


def eval_command(
    adapters: Annotated[list[str] | None, typer.Argument(
        help="Adapters to evaluate: id, name:vN or name (its newest version); all on one "
             "base.")] = None,
    dataset: str | None = typer.Option(
        None, "--dataset", help="Snapshot whose questions are asked (default: the snapshot the "
        "first adapter was trained on)."),
    base: str | None = typer.Option(
        None, "--base", help="Registered base to evaluate alone when no adapter is named "
        "(default: the adapters' base)."),
    split: str = typer.Option(_DEFAULTS.split, "--split", help=_help("split")),
    max_new_tokens: int = typer.Option(_DEFAULTS.max_new_tokens, "--max-new-tokens",
                                       help=_help("max_new_tokens")),
    limit: int | None = typer.Option(None, "--limit", help=_help("limit")),
    batch_size: int = typer.Option(_DEFAULTS.batch_size, "--batch-size",
                                   help=_help("batch_size")),
    include_base: bool = typer.Option(True, "--with-base/--no-base",
                                      help=_help("include_base")),
    examples: int = typer.Option(3, "--examples", min=0,
                                 help="Questions shown side by side after the table."),
    encoder: str | None = typer.Option(None, "--encoder", help=_help("encoder")),
    as_json: bool = typer.Option(False, "--json", help="Print the recorded rows as JSON."),
) -> None:
    """Answer a snapshot's held-out questions greedily with the base alone and with each
    adapter (same prompts, same token budget), score ROUGE-L, exact match, answer similarity
    (MiniLM cosine) and latency, record the results and print them."""
    from registry.evaluations import batch
    from trainers.evaluation import plan_evaluation, run_evaluation

    config = EvalConfig(split=split, max_new_tokens=max_new_tokens, limit=limit,
                        batch_size=batch_size, include_base=include_base,
                        keep_examples=max(examples, _DEFAULTS.keep_examples), encoder=encoder)
    plan = plan_evaluation(list(adapters or []), dataset, base, config)
    models = len(plan.adapters) + (1 if include_base else 0)
    if models == 0:
        from trainers.errors import TrainerError

        raise TrainerError("nothing to evaluate: name an adapter, or drop --no-base")
    if as_json:
        batch_id = run_evaluation(plan, config, progress=_emit_progress)
        jobs.emit_result(evaluation_batch=batch_id)
        typer.echo(json.dumps([r.__dict__ for r in batch(batch_id)], indent=1, default=str))
        return
    jobs.emit_result(evaluation_batch=evaluate_and_print(plan, config, examples))


def _emit_progress(label: str, done: int, total: int) -> None:
    """Answers so far for one model, to a parent job (core.jobs), e.g. the app's progress bar."""
    jobs.emit("progress", model=label, step=done, total=total)


def evaluate_and_print(plan: EvalPlan, config: EvalConfig, examples: int = 3) -> str:
    """Run the evaluation with a progress bar per model, print the tables; returns the batch."""
    from trainers.evaluation import run_evaluation

    models = len(plan.adapters) + (1 if config.include_base else 0)
    console.print(f"evaluating {models} model(s) on {len(plan.chats)} {config.split} questions "
                  f"of snapshot {plan.snapshot.name!r} (base {plan.base.name})")
    columns = (TextColumn("{task.description}"), BarColumn(),
               TextColumn("{task.completed}/{task.total} answers"), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        tasks: dict[str, int] = {}

        def on_batch(label: str, done: int, total: int) -> None:
            _emit_progress(label, done, total)
            if label not in tasks:
                tasks[label] = progress.add_task(label, total=total)
            progress.update(tasks[label], completed=done)

        batch_id = run_evaluation(plan, config, progress=on_batch)
    console.print(results_table(batch_id))
    side_by_side = examples_table(batch_id, examples)
    if side_by_side is not None:
        console.print(side_by_side)
    console.print(f"recorded as evaluation {batch_id[:12]} (`loraforge adapters show ADAPTER`)")
    return batch_id
