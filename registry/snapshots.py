"""Dataset snapshots in the store: which QA pairs a snapshot holds and where its files are.

Trainers never query the store themselves; they call these functions and get plain data back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from registry.db import session_scope
from registry.models import DatasetMember, DatasetSnapshot, QAPair, Split


@dataclass(frozen=True)
class QAPairData:
    """A QA pair detached from the session, as the dataset builder needs it."""

    id: int
    question: str
    answer: str
    content_hash: str
    topic: str | None
    focus_area: str | None


@dataclass(frozen=True)
class SnapshotRecord:
    id: int
    name: str
    kind: str
    params: dict[str, Any]
    seed: int
    content_hash: str
    counts: dict[str, int]
    token_stats: dict[str, Any]
    path: str | None
    created_at: datetime | None


def _record(row: DatasetSnapshot) -> SnapshotRecord:
    return SnapshotRecord(
        id=row.id, name=row.name, kind=row.kind, params=dict(row.params or {}), seed=row.seed,
        content_hash=row.content_hash, counts=dict(row.counts or {}),
        token_stats=dict(row.token_stats or {}), path=row.path, created_at=row.created_at,
    )


def select_qa_pairs(topic: str | None = None) -> list[QAPairData]:
    """QA pairs in id order, optionally only those whose topic or focus area matches ``topic``."""
    stmt = select(QAPair).order_by(QAPair.id)
    if topic:
        # Crawled pairs carry a topic; MedQuAD-style pairs only a focus area. Accept either.
        wanted = topic.lower()
        stmt = stmt.where(
            (func.lower(QAPair.topic) == wanted) | (func.lower(QAPair.focus_area) == wanted)
        )
    with session_scope() as session:
        return [
            QAPairData(p.id, p.question, p.answer, p.content_hash, p.topic, p.focus_area)
            for p in session.scalars(stmt)
        ]


def create_snapshot(
    *,
    name: str,
    kind: str,
    params: dict[str, Any],
    seed: int,
    content_hash: str,
    counts: dict[str, int],
    token_stats: dict[str, Any],
    path: str,
    members: list[tuple[int, Split]],
) -> int:
    """Record a snapshot and its members in one transaction; returns the snapshot id."""
    with session_scope() as session:
        snapshot = DatasetSnapshot(
            name=name, kind=kind, params=params, seed=seed, content_hash=content_hash,
            counts=counts, token_stats=token_stats, path=path,
        )
        snapshot.members = [
            DatasetMember(qa_pair_id=qa_id, split=split) for qa_id, split in members
        ]
        session.add(snapshot)
        session.flush()
        return snapshot.id


def find_snapshot(name: str | None = None) -> SnapshotRecord | None:
    """The snapshot called ``name``; the newest one when ``name`` is None."""
    with session_scope() as session:
        if name is None:
            row = session.scalars(
                select(DatasetSnapshot).order_by(DatasetSnapshot.id.desc()).limit(1)
            ).first()
        else:
            stmt = select(DatasetSnapshot).where(DatasetSnapshot.name == name)
            row = session.scalars(stmt).first()
        return _record(row) if row is not None else None


def list_snapshots() -> list[SnapshotRecord]:
    with session_scope() as session:
        rows = session.scalars(select(DatasetSnapshot).order_by(DatasetSnapshot.id))
        return [_record(r) for r in rows]


def snapshot_member_ids(snapshot_id: int, split: Split | None = None) -> list[int]:
    """QA pair ids of a snapshot (of one split if given), in id order."""
    stmt = select(DatasetMember.qa_pair_id).where(DatasetMember.snapshot_id == snapshot_id)
    if split is not None:
        stmt = stmt.where(DatasetMember.split == split)
    with session_scope() as session:
        ids = session.scalars(stmt.order_by(DatasetMember.qa_pair_id))
        return [i for i in ids if i is not None]


def count_snapshots() -> int:
    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(DatasetSnapshot)) or 0
