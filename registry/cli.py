"""``loraforge db`` and ``loraforge adapters`` (the store's side: list, show, tag, delete,
lineage); merge, export and the Hub are ``publishing.cli``."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from registry import db

console = Console()

db_app = typer.Typer(
    help="Create and migrate the store (SQLite by default, PostgreSQL by URL).",
    no_args_is_help=True,
)
adapters_app = typer.Typer(
    help="List, inspect, tag, delete, trace, merge and export (GGUF) the adapters in the "
    "registry.",
    no_args_is_help=True,
)


@db_app.command("upgrade")
def db_upgrade(
    revision: str = typer.Argument("head", help="Alembic revision to migrate to."),
) -> None:
    """Create or migrate the store to REVISION (default: the newest)."""
    db.upgrade(revision=revision)
    url = db.get_engine().url.render_as_string(hide_password=True)
    console.print(f"store at {url} is at revision {db.current_revision()}")


@db_app.command("current")
def db_current() -> None:
    """Print the store's URL and migration revision."""
    url = db.get_engine().url.render_as_string(hide_password=True)
    revision = db.current_revision() or "(none: run `loraforge db upgrade`)"
    console.print(f"{url}: revision {revision}")


ADAPTER_HELP = "Adapter id, name:vN label, or name (its newest version)."


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) or "-"
    return str(value)


EVAL_KEYS = ("rouge_l", "exact_match", "answer_similarity", "latency_seconds")


def _eval_rows(adapter_id: int) -> dict[str, str]:
    """The adapter's newest held-out evaluation as 'value (base value, difference)'."""
    from registry.evaluations import latest_for_adapter

    found = latest_for_adapter(adapter_id)
    if found is None:
        return {"eval": "not evaluated (`loraforge eval ADAPTER`)"}
    mine, base = found
    rows = {"eval.dataset": f"{mine.snapshot_name}/{mine.split}, {mine.examples_count} "
                           f"questions, {mine.settings.get('max_new_tokens')} new tokens"}
    for key in EVAL_KEYS:
        value = mine.metrics.get(key)
        text = _fmt(value)
        if base is not None and value is not None and base.metrics.get(key) is not None:
            text += f" (base {_fmt(base.metrics[key])}, {value - base.metrics[key]:+.3f})"
        rows[f"eval.{key}"] = text
    return rows


@adapters_app.command("list")
def adapters_list() -> None:
    """A table of adapters with their key metrics."""
    from registry.adapter_ops import show_adapter
    from registry.adapters import list_adapters

    db.ensure_schema()
    table = Table("id", "adapter", "method", "base", "trainable", "final loss", "tags", "source")
    for record in list_adapters():
        detail = show_adapter(record.id)
        m = detail.metrics
        table.add_row(
            str(detail.id), detail.label, detail.method, detail.base_name,
            _fmt(m.get("trainable_params")), _fmt(m.get("final_loss")), _fmt(detail.tags),
            detail.source_repo or detail.snapshot_name or "-",
        )
    console.print(table)


@adapters_app.command("show")
def adapters_show(
    adapter: str = typer.Argument(..., help=ADAPTER_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the record as JSON."),
) -> None:
    """The full record of one adapter: files, LoRA config, metrics, tags, publications."""
    from registry.adapter_ops import show_adapter
    from registry.exports import exports_for

    db.ensure_schema()
    detail = show_adapter(adapter)
    if as_json:
        from registry.evaluations import latest_for_adapter

        found = latest_for_adapter(detail.id)
        record = {**asdict(detail), "evaluation": asdict(found[0]) if found else None,
                  "base_evaluation": asdict(found[1]) if found and found[1] else None,
                  "exports": [asdict(e) for e in exports_for(detail.id)]}
        typer.echo(json.dumps(record, indent=2, default=str))
        return
    table = Table("field", "value", show_header=False)
    for key, value in asdict(detail).items():
        if key in ("metrics", "lora_config", "publications"):
            continue
        table.add_row(key, _fmt(value))
    for key, value in sorted(detail.lora_config.items()):
        table.add_row(f"lora.{key}", _fmt(value))
    checked = detail.metrics.get("generated_examples")
    for key, value in sorted(detail.metrics.items()):
        # The trainer's quick check, apart from the held-out eval rows below.
        shown = f" (training check, {checked} questions)" if (
            key in ("rouge_l", "exact_match") and checked) else ""
        table.add_row(f"metric.{key}{shown}", _fmt(value))
    for key, value in _eval_rows(detail.id).items():
        table.add_row(key, value)
    for pub in detail.publications:
        table.add_row("published", f"{pub.repo_id}@{pub.revision} {pub.commit_sha} {pub.url}")
    for export in exports_for(detail.id):
        gone = "" if export.on_disk else " (file gone)"
        table.add_row(f"export.{export.format}.{export.kind}",
                      f"{export.path} {export.quantization} {export.size_bytes:,} bytes "
                      f"sha256 {export.sha256}{gone}")
    console.print(table)


@adapters_app.command("compare")
def adapters_compare(
    adapters: Annotated[list[str], typer.Argument(help="Two or more adapters. " + ADAPTER_HELP)],
) -> None:
    """Several adapters side by side: method, base, data, LoRA settings and every metric."""
    from registry.adapter_ops import compare_adapters

    db.ensure_schema()
    details = compare_adapters(adapters)
    table = Table("", *[d.label for d in details])
    rows = {"method": [d.method for d in details], "base": [d.base_name for d in details],
            "snapshot": [d.snapshot_name for d in details], "tags": [d.tags for d in details],
            "source repo": [d.source_repo for d in details]}
    for key in sorted({k for d in details for k in d.lora_config} - {"base_model_name_or_path"}):
        rows[f"lora.{key}"] = [d.lora_config.get(key) for d in details]
    for key in sorted({k for d in details for k in d.metrics}):
        rows[key] = [d.metrics.get(key) for d in details]
    evals = [_eval_rows(d.id) for d in details]
    for key in dict.fromkeys(k for e in evals for k in e):
        rows[key] = [e.get(key) for e in evals]
    for key, values in rows.items():
        table.add_row(key, *[_fmt(v) for v in values])
    console.print(table)


@adapters_app.command("tag")
def adapters_tag(
    adapter: str = typer.Argument(..., help=ADAPTER_HELP),
    add: Annotated[list[str] | None, typer.Option(
        "--add", "-a", help="Tag to add (repeatable).")] = None,
    remove: Annotated[list[str] | None, typer.Option(
        "--remove", "-r", help="Tag to remove (repeatable).")] = None,
) -> None:
    """Add or remove tags; with neither, print the adapter's tags. Versions are name:vN."""
    from registry.adapter_ops import show_adapter, tag_adapter

    db.ensure_schema()
    tags = tag_adapter(adapter, add=add or [], remove=remove or []) if add or remove \
        else show_adapter(adapter).tags
    console.print(f"{adapter}: {', '.join(tags) or '(no tags)'}")


@adapters_app.command("delete")
def adapters_delete(
    adapter: str = typer.Argument(..., help=ADAPTER_HELP),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Remove an adapter's row and its files (under LORAFORGE_HOME) together."""
    from registry.adapter_ops import delete_adapter
    from registry.adapters import get_adapter

    db.ensure_schema()
    record = get_adapter(adapter)
    if not yes:
        typer.confirm(f"delete {record.label} and {record.path}?", abort=True)
    label, removed = delete_adapter(record.id)
    where = "and its files" if removed else "(files outside LORAFORGE_HOME left in place)"
    console.print(f"deleted {label} {where}")


@adapters_app.command("lineage")
def adapters_lineage(
    adapter: str = typer.Argument(..., help=ADAPTER_HELP),
    urls: int = typer.Option(10, "--urls", min=0, help="How many source URLs to list."),
) -> None:
    """Walk adapter → run → dataset snapshot → articles/QA pairs → crawl runs and URLs."""
    from registry.lineage import adapter_lineage

    db.ensure_schema()
    lin = adapter_lineage(adapter)
    console.print(f"[bold]{lin.adapter_label}[/] on base {lin.base_name} ({lin.base_source})")
    if lin.source_repo:
        console.print(f"└ pulled from {lin.source_repo} @ {lin.source_revision}")
    if lin.run is not None:
        console.print(f"└ training run #{lin.run.id}: {lin.run.method}, {lin.run.status}")
    if lin.snapshot is None:
        console.print("  (no dataset snapshot recorded)")
        return
    snap = lin.snapshot
    console.print(f"  └ snapshot {snap.name} ({snap.kind}, seed {snap.seed}, "
                  f"{_fmt([f'{k} {v}' for k, v in sorted(snap.split_sizes.items())])})")
    console.print(f"    └ {lin.qa_pairs} QA pairs, {lin.articles} articles, "
                  f"topics: {_fmt(lin.topics)}")
    for crawl in lin.crawl_runs:
        console.print(f"      └ crawl run #{crawl.id}: {crawl.spider} ({crawl.source or '-'}), "
                      f"{crawl.status}, {crawl.started_at:%Y-%m-%d %H:%M}")
    for url in lin.urls[:urls]:
        console.print(f"        · {url}", soft_wrap=True)
    if len(lin.urls) > urls:
        console.print(f"        · … {len(lin.urls) - urls} more (--urls N)")
