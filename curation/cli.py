"""``loraforge data``: build, list, show and export dataset snapshots."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from core import jobs
from curation.spec import SnapshotSpec

console = Console()
data_app = typer.Typer(help="Build, inspect and export dataset snapshots from the store.",
                       no_args_is_help=True)
_SPEC = SnapshotSpec()


def _help(field: str) -> str:
    # Rich would read "[default: …]" as markup and drop it.
    return SnapshotSpec.__dataclass_fields__[field].metadata["help"].replace("[", "\\[")


@contextmanager
def embedding_progress() -> Iterator[Callable[[int, int], None]]:
    """A progress bar for sentence embedding, started on the first batch."""
    columns = (TextColumn("embedding"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = None

        def on_batch(done: int, total: int) -> None:
            nonlocal task
            if task is None:
                task = progress.add_task("embed", total=total)
            progress.update(task, completed=done)

        yield on_batch


def _date(value: str | None, option: str) -> datetime | None:
    from curation.errors import CurationError

    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise CurationError(f"{option} {value!r} is not a date; write YYYY-MM-DD") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


@data_app.command("build")
def data_build(
    name: str | None = typer.Option(None, "--name",
                                    help="Snapshot name \\[default: KIND-<hash>]."),
    kind: str = typer.Option(_SPEC.kind, "--kind", help=_help("kind")),
    test_fraction: float = typer.Option(_SPEC.test_fraction, "--test-fraction",
                                        help=_help("test_fraction")),
    validation_fraction: float = typer.Option(_SPEC.validation_fraction, "--validation-fraction",
                                              help=_help("validation_fraction")),
    seed: int = typer.Option(_SPEC.seed, "--seed", help=_help("seed")),
    limit: int | None = typer.Option(None, "--limit", help=_help("limit")),
    system_prompt: str | None = typer.Option(None, "--system-prompt",
                                             help=_help("system_prompt")),
    topic: str | None = typer.Option(None, "--topic", help=_help("topic")),
    source: str | None = typer.Option(None, "--source", help=_help("source")),
    language: str | None = typer.Option(None, "--language", help=_help("language")),
    since: str | None = typer.Option(None, "--since", help=_help("since") + " YYYY-MM-DD."),
    until: str | None = typer.Option(None, "--until", help=_help("until") + " YYYY-MM-DD."),
    crawl_run: int | None = typer.Option(None, "--crawl-run", help=_help("crawl_run")),
    import_file: str | None = typer.Option(None, "--import-file", help=_help("import_file")),
    max_answer_words: int | None = typer.Option(None, "--max-answer-words",
                                                help=_help("max_answer_words")),
    min_answer_words: int | None = typer.Option(None, "--min-answer-words",
                                                help=_help("min_answer_words")),
    chunk_words: int = typer.Option(_SPEC.chunk_words, "--chunk-words",
                                    help=_help("chunk_words")),
    stratify: str = typer.Option(str(_SPEC.stratify), "--stratify", help=_help("stratify")),
    near_duplicate_threshold: float = typer.Option(
        _SPEC.near_duplicate_threshold, "--near-duplicate-threshold",
        help=_help("near_duplicate_threshold")),
    shared_words: int = typer.Option(_SPEC.shared_words, "--shared-words",
                                     help=_help("shared_words")),
    clusters: int | None = typer.Option(None, "--clusters", help=_help("clusters")),
    per_cluster: int = typer.Option(_SPEC.per_cluster, "--per-cluster",
                                    help=_help("per_cluster")),
    encoder: str | None = typer.Option(None, "--encoder", help=_help("encoder")),
    tokenizer: str | None = typer.Option(None, "--tokenizer", help=_help("tokenizer")),
    template: str = typer.Option(_SPEC.template, "--template", help=_help("template")),
    max_length: int = typer.Option(_SPEC.max_length, "--max-length", help=_help("max_length")),
    packing: bool = typer.Option(_SPEC.packing, "--packing/--no-packing",
                                 help=_help("packing")),
) -> None:
    """Freeze a selection of the store into train/validation/test JSONL and record it."""
    from curation.build import build_snapshot
    from registry.snapshots import list_snapshots

    with embedding_progress() as on_batch, console.status("building snapshot…"):
        snapshot_id = build_snapshot(
            name=name, test_fraction=test_fraction, seed=seed, limit=limit,
            system_prompt=system_prompt, topic=topic, max_answer_words=max_answer_words,
            embed_progress=on_batch, kind=kind, validation_fraction=validation_fraction,
            source=source, language=language, since=_date(since, "--since"),
            until=_date(until, "--until"), crawl_run=crawl_run, import_file=import_file,
            chunk_words=chunk_words, min_answer_words=min_answer_words,
            stratify=None if stratify.lower() == "none" else stratify,
            near_duplicate_threshold=near_duplicate_threshold, shared_words=shared_words,
            clusters=clusters,
            per_cluster=per_cluster, encoder=encoder, tokenizer=tokenizer, template=template,
            max_length=max_length, packing=packing)
    snap = next(s for s in list_snapshots() if s.id == snapshot_id)
    c = snap.counts
    truncated = f", {c['truncated']} truncated" if "truncated" in c else ""
    jobs.emit_result(snapshot_id=snap.id, snapshot=snap.name, counts=c)
    console.print(f"snapshot [bold]{snap.name}[/] (#{snap.id}): {c['train']} train, "
                  f"{c.get('validation', 0)} validation, {c['test']} test{truncated} "
                  f"→ {snap.path}")


@data_app.command("list")
def data_list() -> None:
    """A table of dataset snapshots."""
    from registry.db import ensure_schema
    from registry.snapshots import list_snapshots

    ensure_schema()
    table = Table("id", "name", "kind", "train", "val", "test", "seed", "hash", "path")
    for s in list_snapshots():
        table.add_row(str(s.id), s.name, s.kind, str(s.counts.get("train", 0)),
                      str(s.counts.get("validation", 0)), str(s.counts.get("test", 0)),
                      str(s.seed), s.content_hash[:12], s.path or "-")
    console.print(table)


def _require(name: str | None):
    from curation.errors import CurationError
    from registry.db import ensure_schema
    from registry.snapshots import find_snapshot

    ensure_schema()
    snap = find_snapshot(name)
    if snap is None:
        raise CurationError(f"no dataset snapshot called {name!r}; see `loraforge data list`"
                           if name else "no dataset snapshots yet; build one with "
                           "`loraforge data build`")
    return snap


@data_app.command("show")
def data_show(
    name: str | None = typer.Argument(None, help="Snapshot name \\[default: the newest]."),
) -> None:
    """Parameters, counts per split and topic, and length statistics of one snapshot."""
    from registry.snapshots import snapshot_members

    snap = _require(name)
    console.print(f"[bold]{snap.name}[/] (#{snap.id}) {snap.kind}, seed {snap.seed}, "
                  f"hash {snap.content_hash[:16]}, {len(snapshot_members(snap.id))} members "
                  f"→ {snap.path}")
    params = Table("parameter", "value", title="parameters")
    for key, value in sorted(snap.params.items()):
        if value is not None:
            params.add_row(key, str(value))
    console.print(params)
    counts = {k: v for k, v in snap.counts.items() if not isinstance(v, dict)}
    console.print(_kv("counts", counts))
    topics = Table("topic", "train", "validation", "test", title="per topic")
    for topic, per_split in snap.counts.get("topics", {}).items():
        topics.add_row(topic, *(str(per_split.get(s, 0)) for s in ("train", "validation",
                                                                    "test")))
    console.print(topics)
    stats = {k: v for k, v in snap.token_stats.items() if k != "per_split"}
    console.print(_kv("lengths", stats))


def _kv(title: str, values: dict) -> Table:
    table = Table("name", "value", title=title)
    for key, value in values.items():
        table.add_row(key, str(value))
    return table


@data_app.command("export")
def data_export(
    out: str = typer.Argument(..., help="New or empty folder to write the files to."),
    name: str | None = typer.Option(None, "--name", help="Snapshot name \\[default: the newest]."),
) -> None:
    """Copy a snapshot's JSONL splits (loadable with datasets.load_dataset("json", ...)),
    plots and a snapshot.json card to OUT."""
    from dataclasses import asdict

    from curation.export import export_snapshot

    snap = _require(name)
    written = export_snapshot(Path(snap.path or ""), Path(out), asdict(snap))
    console.print(f"exported [bold]{snap.name}[/]: {', '.join(p.name for p in written)} → {out}")
