"""Training runs and the adapters they produce.

``list_adapters`` and ``get_adapter`` return frozen ``AdapterRecord`` values and are the stable
way for other components (the UI, the Hub publisher) to find adapters and their files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from registry.db import session_scope
from registry.errors import RegistryError
from registry.models import Adapter, RunStatus, TrainingRun, utcnow
from registry.records import record_of


@dataclass(frozen=True)
class AdapterRecord:
    """An adapter as plain data: enough to load it (``base_path`` + ``path``) and to show it."""

    id: int
    name: str
    version: int
    label: str
    path: str
    method: str
    base_name: str
    base_path: str
    metrics: dict[str, Any] = field(default_factory=dict)
    snapshot_name: str | None = None
    training_run_id: int | None = None
    created_at: datetime | None = None


@dataclass(frozen=True)
class RunRecord:
    id: int
    method: str
    status: str
    config: dict[str, Any]
    metrics: dict[str, Any]
    loss_curve: list[dict[str, float]]
    error: str | None
    output_dir: str | None
    base_name: str | None = None
    snapshot_name: str | None = None


def _adapter_record(row: Adapter) -> AdapterRecord:
    base = row.base_model
    return record_of(AdapterRecord, row, label=row.label, base_name=base.name,
                     base_path=base.path or base.source,
                     snapshot_name=row.snapshot.name if row.snapshot is not None else None)


def _run_record(row: TrainingRun) -> RunRecord:
    return record_of(RunRecord, row,
                     base_name=row.base_model.name if row.base_model is not None else None,
                     snapshot_name=row.snapshot.name if row.snapshot is not None else None)


def start_run(*, method: str, base_model_id: int, snapshot_id: int, config: dict[str, Any]) -> int:
    """Record a run as running before any training starts, so a crash still leaves a trace."""
    with session_scope() as session:
        run = TrainingRun(
            method=method, base_model_id=base_model_id, snapshot_id=snapshot_id, config=config,
            status=RunStatus.running,
        )
        session.add(run)
        session.flush()
        return run.id


def fail_run(run_id: int, error: str) -> None:
    with session_scope() as session:
        run = _run_row(session, run_id)
        run.status = RunStatus.failed
        run.error = error
        run.finished_at = utcnow()


def _run_row(session: Session, run_id: int) -> TrainingRun:
    run = session.get(TrainingRun, run_id)
    if run is None:
        raise RegistryError(f"training run #{run_id} does not exist")
    return run


def restart_run(run_id: int) -> None:
    """Mark an interrupted run as running again, for ``--resume``."""
    with session_scope() as session:
        run = _run_row(session, run_id)
        run.status = RunStatus.running
        run.error = None
        run.finished_at = None


def next_version(name: str) -> int:
    """The version the next adapter called ``name`` gets (1 for a new name)."""
    with session_scope() as session:
        latest = session.scalar(select(func.max(Adapter.version)).where(Adapter.name == name))
        return (latest or 0) + 1


def finish_run(
    run_id: int,
    *,
    adapter_name: str,
    version: int,
    path: str,
    metrics: dict[str, Any],
    loss_curve: list[dict[str, float]],
    tags: list[str] | None = None,
) -> int:
    """Mark the run succeeded and create its adapter in one transaction; returns the adapter id."""
    with session_scope() as session:
        run = _run_row(session, run_id)
        run.status = RunStatus.succeeded
        run.metrics = metrics
        run.loss_curve = loss_curve
        run.output_dir = path
        run.finished_at = utcnow()
        adapter = Adapter(
            name=adapter_name, version=version, path=path, method=run.method,
            base_model_id=run.base_model_id, training_run_id=run.id, snapshot_id=run.snapshot_id,
            metrics=metrics, tags=tags or [],
        )
        session.add(adapter)
        session.flush()
        return adapter.id


def get_run(run_id: int) -> RunRecord:
    with session_scope() as session:
        run = _run_row(session, run_id)
        return _run_record(run)


def list_runs() -> list[RunRecord]:
    with session_scope() as session:
        rows = session.scalars(select(TrainingRun).order_by(TrainingRun.id))
        return [_run_record(r) for r in rows]


def list_adapters() -> list[AdapterRecord]:
    """Every adapter, oldest first."""
    with session_scope() as session:
        return [_adapter_record(a) for a in session.scalars(select(Adapter).order_by(Adapter.id))]


def get_adapter(label_or_id: str | int) -> AdapterRecord:
    """An adapter by id (``3``), label (``tiny-lora:v2``) or name (``tiny-lora``: the newest)."""
    key = str(label_or_id).strip()
    with session_scope() as session:
        row: Adapter | None = None
        if key.isdigit():
            row = session.get(Adapter, int(key))
        elif ":v" in key and key.rsplit(":v", 1)[1].isdigit():
            name, version = key.rsplit(":v", 1)
            row = session.scalars(
                select(Adapter).where(Adapter.name == name, Adapter.version == int(version))
            ).first()
        else:
            row = session.scalars(
                select(Adapter).where(Adapter.name == key).order_by(Adapter.version.desc())
            ).first()
        if row is None:
            raise RegistryError(
                f"no adapter {key!r}; see `loraforge adapters list` for ids and labels (name:vN)"
            )
        return _adapter_record(row)
