"""Held-out evaluations: how a base alone and the base with each adapter answer a snapshot split.

``loraforge eval`` writes one row per model in a batch that shares prompts, token budget and
code; the CLI, the Adapters tab and the model card read them back from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select

from registry.db import session_scope
from registry.models import Evaluation, Split


@dataclass(frozen=True)
class EvaluationRecord:
    id: int
    batch_id: str
    base_name: str
    adapter_label: str | None  # None: the base model alone
    snapshot_name: str
    split: str
    examples_count: int
    metrics: dict[str, Any]
    settings: dict[str, Any] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)
    created_at: datetime | None = None

    @property
    def model_label(self) -> str:
        return self.adapter_label or f"{self.base_name} (base only)"


def _record(row: Evaluation) -> EvaluationRecord:
    return EvaluationRecord(
        id=row.id, batch_id=row.batch_id, base_name=row.base_model.name,
        adapter_label=row.adapter.label if row.adapter is not None else None,
        snapshot_name=row.snapshot.name, split=row.split.value,
        examples_count=row.examples_count, metrics=dict(row.metrics or {}),
        settings=dict(row.settings or {}), examples=list(row.examples or []),
        created_at=row.created_at,
    )


@dataclass(frozen=True)
class NewEvaluation:
    """One model's results, as the evaluator hands them to ``record_batch``."""

    adapter_id: int | None
    metrics: dict[str, Any]
    examples: list[dict[str, Any]]
    examples_count: int


def record_batch(*, batch_id: str, base_model_id: int, snapshot_id: int, split: str,
                 settings: dict[str, Any], results: list[NewEvaluation]) -> list[int]:
    """Store every model's results of one evaluation in one transaction; returns the row ids."""
    with session_scope() as session:
        rows = [Evaluation(batch_id=batch_id, base_model_id=base_model_id,
                           adapter_id=r.adapter_id, snapshot_id=snapshot_id, split=Split(split),
                           examples_count=r.examples_count, settings=settings,
                           metrics=r.metrics, examples=r.examples) for r in results]
        session.add_all(rows)
        session.flush()
        return [row.id for row in rows]


def batch(batch_id: str) -> list[EvaluationRecord]:
    """The rows of one evaluation, base first, then adapters in the order they were given."""
    with session_scope() as session:
        rows = session.scalars(select(Evaluation).where(Evaluation.batch_id == batch_id)
                               .order_by(Evaluation.id))
        return [_record(r) for r in rows]


def latest_for_adapter(adapter_id: int) -> tuple[EvaluationRecord, EvaluationRecord | None] | None:
    """The adapter's newest evaluation and, from the same batch, its base's row (if it ran)."""
    with session_scope() as session:
        row = session.scalars(select(Evaluation).where(Evaluation.adapter_id == adapter_id)
                              .order_by(Evaluation.id.desc())).first()
        if row is None:
            return None
        base = session.scalars(select(Evaluation).where(
            Evaluation.batch_id == row.batch_id, Evaluation.adapter_id.is_(None))).first()
        return _record(row), (_record(base) if base is not None else None)
