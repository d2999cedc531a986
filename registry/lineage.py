"""Where an adapter came from: adapter → training run → dataset snapshot → QA pairs / articles →
crawl runs and the URLs they were read from.

Pulled adapters have no run or snapshot here; their lineage is the Hub repo and revision.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from registry.adapters import get_adapter
from registry.db import session_scope
from registry.models import Adapter, Article, CrawlRun, DatasetMember, QAPair
from registry.records import record_of


@dataclass(frozen=True)
class RunLineage:
    id: int
    method: str
    status: str
    config: dict[str, Any]
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True)
class SnapshotLineage:
    id: int
    name: str
    kind: str
    content_hash: str
    seed: int
    counts: dict[str, Any]
    split_sizes: dict[str, int]


@dataclass(frozen=True)
class CrawlRunLineage:
    id: int
    spider: str
    status: str
    source: str | None
    started_at: datetime | None


@dataclass(frozen=True)
class Lineage:
    adapter_label: str
    base_name: str
    base_source: str
    run: RunLineage | None
    snapshot: SnapshotLineage | None
    qa_pairs: int = 0
    articles: int = 0
    languages: list[str] = field(default_factory=list)
    topics: list[str] = field(default_factory=list)
    crawl_runs: list[CrawlRunLineage] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    source_repo: str | None = None
    source_revision: str | None = None


def _member_origins(session: Session, snapshot_id: int) -> tuple[list[QAPair], list[Article]]:
    members = session.scalars(
        select(DatasetMember).where(DatasetMember.snapshot_id == snapshot_id)
        .options(selectinload(DatasetMember.qa_pair).selectinload(QAPair.article),
                 selectinload(DatasetMember.article))
    ).all()
    qa_pairs = [m.qa_pair for m in members if m.qa_pair is not None]
    articles = {m.article.id: m.article for m in members if m.article is not None}
    articles |= {qa.article.id: qa.article for qa in qa_pairs if qa.article is not None}
    return qa_pairs, list(articles.values())


def _split_sizes(session: Session, snapshot_id: int) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for split in session.scalars(
        select(DatasetMember.split).where(DatasetMember.snapshot_id == snapshot_id)
    ):
        sizes[split.value] = sizes.get(split.value, 0) + 1
    return sizes


def adapter_lineage(label_or_id: str | int) -> Lineage:
    """Walk from an adapter back to the crawl runs and URLs its training data came from."""
    adapter_id = get_adapter(label_or_id).id
    with session_scope() as session:
        adapter = session.get(Adapter, adapter_id)
        assert adapter is not None
        run = adapter.training_run
        snapshot = adapter.snapshot or (run.snapshot if run is not None else None)
        lineage = Lineage(
            adapter_label=adapter.label, base_name=adapter.base_model.name,
            base_source=adapter.base_model.source,
            run=record_of(RunLineage, run) if run is not None else None,
            snapshot=None, source_repo=adapter.source_repo,
            source_revision=adapter.source_revision,
        )
        if snapshot is None:
            return lineage
        qa_pairs, articles = _member_origins(session, snapshot.id)
        crawl_ids = {qa.crawl_run_id for qa in qa_pairs} | {a.crawl_run_id for a in articles}
        crawl_ids.discard(None)
        crawl_runs = session.scalars(
            select(CrawlRun).where(CrawlRun.id.in_(crawl_ids)).order_by(CrawlRun.id)
        ).all() if crawl_ids else []
        urls = sorted({a.url for a in articles} | {qa.source for qa in qa_pairs if qa.source})
        return replace(
            lineage,
            snapshot=record_of(SnapshotLineage, snapshot,
                               split_sizes=_split_sizes(session, snapshot.id)),
            qa_pairs=len(qa_pairs), articles=len(articles),
            languages=sorted({a.language for a in articles if a.language}),
            topics=sorted({t for t in [*(a.topic for a in articles),
                                       *(qa.topic for qa in qa_pairs)] if t}),
            crawl_runs=[
                record_of(CrawlRunLineage, c,
                          source=c.source.name if c.source is not None else None)
                for c in crawl_runs],
            urls=urls,
        )
