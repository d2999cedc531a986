"""Dataset snapshots in the store: what a snapshot may select, what it holds, where its files are.

Trainers never query the store themselves; they call these functions and get plain data back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, func, or_, select

from registry.db import session_scope
from registry.models import (
    Article,
    DatasetMember,
    DatasetSnapshot,
    QAPair,
    Source,
    Split,
)
from registry.records import record_of


@dataclass(frozen=True)
class StoreFilter:
    """Which stored QA pairs or articles a snapshot draws from; None means any."""

    topic: str | None = None
    source: str | None = None
    language: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    crawl_run: int | None = None

    def describe(self) -> str:
        """The filters as the CLI options that set them, for error messages."""
        parts = [f"--{name.replace('_', '-')} {value!r}" if isinstance(value, str)
                 else f"--{name.replace('_', '-')} {value}"
                 for name, value in self.as_params().items() if value is not None]
        return " and ".join(parts)

    def as_params(self) -> dict[str, Any]:
        return {"topic": self.topic, "source": self.source, "language": self.language,
                "since": self.since.isoformat() if self.since else None,
                "until": self.until.isoformat() if self.until else None,
                "crawl_run": self.crawl_run}


@dataclass(frozen=True)
class QAPairData:
    """A QA pair detached from the session, as the dataset builder needs it."""

    id: int
    question: str
    answer: str
    content_hash: str
    topic: str | None
    focus_area: str | None
    source: str | None = None
    language: str | None = None


@dataclass(frozen=True)
class ArticleData:
    id: int
    title: str
    text: str
    content_hash: str
    topic: str | None
    source: str | None
    language: str | None


@dataclass(frozen=True)
class SnapshotRecord:
    id: int
    name: str
    kind: str
    params: dict[str, Any]
    seed: int
    content_hash: str
    counts: dict[str, Any]
    token_stats: dict[str, Any]
    path: str | None
    created_at: datetime | None


@dataclass(frozen=True)
class SnapshotMember:
    """One stored origin of a snapshot's examples: a QA pair or an article, and its split."""

    split: Split
    qa_pair_id: int | None = None
    article_id: int | None = None


def _record(row: DatasetSnapshot) -> SnapshotRecord:
    return record_of(SnapshotRecord, row)


def _date_col(stmt_entity: type) -> Any:
    # A page's publication date when it has one; otherwise when we stored it.
    if stmt_entity is QAPair:
        return func.coalesce(Article.published, QAPair.created_at)
    return func.coalesce(Article.published, Article.created_at)


def _apply_filter(stmt: Select, entity: type, where: StoreFilter) -> Select:
    conditions = []
    if where.topic:
        wanted = where.topic.lower()
        if entity is QAPair:
            # Crawled pairs carry a topic; MedQuAD-style pairs only a focus area. Accept either.
            conditions.append(or_(func.lower(QAPair.topic) == wanted,
                                  func.lower(QAPair.focus_area) == wanted))
        else:
            conditions.append(or_(func.lower(Article.topic) == wanted,
                                  func.lower(Article.title) == wanted))
    if where.source:
        wanted = where.source.lower()
        source_match = func.lower(Source.name) == wanted
        if entity is QAPair:
            source_match = or_(source_match, func.lower(QAPair.source) == wanted,
                               func.lower(QAPair.source).like(f"%://{wanted}/%"))
        conditions.append(source_match)
    if where.language:
        conditions.append(func.lower(Article.language) == where.language.lower())
    if where.since:
        conditions.append(_date_col(entity) >= where.since)
    if where.until:
        conditions.append(_date_col(entity) <= where.until)
    if where.crawl_run is not None:
        run_col = QAPair.crawl_run_id if entity is QAPair else Article.crawl_run_id
        conditions.append(or_(run_col == where.crawl_run, Article.crawl_run_id == where.crawl_run))
    return stmt.where(and_(*conditions)) if conditions else stmt


def qa_pair_order() -> tuple[Any, ...]:
    """ORDER BY terms for QA pairs: page URL, then id (page order). Needs Article joined."""
    return (func.coalesce(Article.url, ""), QAPair.id)


def select_qa_pairs(topic: str | None = None, *, where: StoreFilter | None = None,
                    ) -> list[QAPairData]:
    """QA pairs that match ``where`` (or just ``topic``), in crawl-independent order.

    Pages arrive in whatever order concurrent requests finish, so row ids differ from one crawl
    of a site to the next. Ordering by page URL, then by position on the page, gives the same
    list (and so the same ``--limit`` sample and the same kept repeat) for the same pages.
    Pairs without a page (imports) keep their file order.
    """
    where = where or StoreFilter(topic=topic)
    stmt = (select(QAPair, Source.name, Article.language)
            .outerjoin(Article, QAPair.article_id == Article.id)
            .outerjoin(Source, Article.source_id == Source.id)
            .order_by(*qa_pair_order()))
    stmt = _apply_filter(stmt, QAPair, where)
    with session_scope() as session:
        return [
            QAPairData(p.id, p.question, p.answer, p.content_hash, p.topic, p.focus_area,
                       source or p.source, language)
            for p, source, language in session.execute(stmt)
        ]


def select_articles(where: StoreFilter | None = None) -> list[ArticleData]:
    """Articles that match ``where``, by URL: the same pages give the same order in any crawl."""
    stmt = (select(Article, Source.name)
            .outerjoin(Source, Article.source_id == Source.id)
            .order_by(Article.url))
    stmt = _apply_filter(stmt, Article, where or StoreFilter())
    with session_scope() as session:
        return [ArticleData(a.id, a.title, a.text, a.content_hash, a.topic, source, a.language)
                for a, source in session.execute(stmt)]


def known_topics() -> set[str]:
    """Every topic and focus area in the store, lower-cased, to tell a typo from an empty match."""
    with session_scope() as session:
        found: set[str] = set()
        for column in (QAPair.topic, QAPair.focus_area, Article.topic, Article.title):
            found.update(v.lower() for v in session.scalars(select(column).distinct()) if v)
        return found


def create_snapshot(
    *,
    name: str,
    kind: str,
    params: dict[str, Any],
    seed: int,
    content_hash: str,
    counts: dict[str, Any],
    token_stats: dict[str, Any],
    path: str,
    members: list[tuple[int, Split]] | list[SnapshotMember],
) -> int:
    """Record a snapshot and its members in one transaction; returns the snapshot id.

    ``members`` are ``SnapshotMember``s, or ``(qa_pair_id, split)`` tuples for QA snapshots.
    """
    with session_scope() as session:
        snapshot = DatasetSnapshot(
            name=name, kind=kind, params=params, seed=seed, content_hash=content_hash,
            counts=counts, token_stats=token_stats, path=path,
        )
        snapshot.members = [
            DatasetMember(qa_pair_id=m.qa_pair_id, article_id=m.article_id, split=m.split)
            if isinstance(m, SnapshotMember) else DatasetMember(qa_pair_id=m[0], split=m[1])
            for m in members
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


def snapshot_members(snapshot_id: int) -> list[SnapshotMember]:
    """Every member of a snapshot, QA pairs first, each in id order."""
    stmt = (select(DatasetMember).where(DatasetMember.snapshot_id == snapshot_id)
            .order_by(DatasetMember.qa_pair_id, DatasetMember.article_id))
    with session_scope() as session:
        return [SnapshotMember(m.split, m.qa_pair_id, m.article_id)
                for m in session.scalars(stmt)]


def count_snapshots() -> int:
    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(DatasetSnapshot)) or 0
