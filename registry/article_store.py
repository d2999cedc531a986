"""Write crawl runs, articles and QA pairs. Crawlers reach the store only through these functions.

Articles are keyed by canonical URL and QA pairs by ``qa_content_hash``, so storing the same
page twice changes nothing: a re-crawl updates changed pages and leaves unchanged ones alone.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import delete, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from registry.content_hash import article_content_hash, qa_content_hash
from registry.db import ensure_schema, session_scope
from registry.errors import StoreError
from registry.models import Article, CrawlRun, CrawlStatus, DatasetMember, QAPair, Source, utcnow
from registry.records import record_of

# Values per IN (...) list: well under SQLite's and PostgreSQL's limits on bound parameters.
CHUNK = 500


@dataclass(frozen=True)
class QARecord:
    question: str
    answer: str
    qtype: str | None = None
    focus_area: str | None = None  # when the pair's own differs from its article's (imports)


@dataclass(frozen=True)
class ArticleRecord:
    url: str
    title: str
    text: str
    topic: str | None = None
    language: str | None = None
    qa_pairs: Sequence[QARecord] = ()
    focus_area: str | None = None
    source: str | None = None  # the pairs' ``source`` column; default: the article's URL
    author: str | None = None
    published: str | None = None  # ISO 8601, as the page gives it; unparseable is dropped


@dataclass
class StoreCounts:
    """What one ``store_articles`` call did, counted per article."""

    stored: int = 0
    updated: int = 0
    unchanged: int = 0
    qa_added: int = 0
    qa_removed: int = 0


@dataclass(frozen=True)
class CrawlRunSummary:
    id: int
    spider: str
    status: str
    args: dict[str, Any]
    pages_seen: int
    items_stored: int
    items_updated: int
    items_unchanged: int
    items_dropped: int
    drop_reasons: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    qa_pairs: int = 0


def _source_for(session: Session, url: str) -> Source:
    return _sources_for(session, [url])[urlsplit(url).netloc.lower()]


def _sources_for(session: Session, urls: Iterable[str]) -> dict[str, Source]:
    """The source row of each URL's host, by host name; missing ones are added (one query)."""
    bases = {urlsplit(u).netloc.lower(): f"{urlsplit(u).scheme}://{urlsplit(u).netloc}"
             for u in urls}
    found = {s.name: s for s in session.scalars(select(Source).where(Source.name.in_(bases)))}
    missing = [Source(name=name, base_url=base) for name, base in bases.items()
               if name not in found]
    if missing:
        session.add_all(missing)
        session.flush()
        found.update((s.name, s) for s in missing)
    return found


def _start_url(args: dict[str, Any]) -> str | None:
    """The first seed URL of a crawl's arguments (the articles spider takes comma-joined lists)."""
    for key in ("sitemap_url", "start_url", "sitemap_urls", "start_urls"):
        value = args.get(key)
        if isinstance(value, str) and value.strip():
            return value.split(",")[0].strip()
    return None


def open_crawl_run(spider: str, args: dict[str, Any], *, url: str | None = None) -> int:
    """Create a running crawl-run row and return its id; advise if the store is missing."""
    ensure_schema(url)
    with session_scope(url) as session:
        # Link a source the store already has; a new one is added with the run's first
        # stored page, so a crawl that fetches nothing leaves only its own failed run behind.
        start = _start_url(args)
        source = session.scalar(select(Source).where(
            Source.name == urlsplit(start).netloc.lower())) if start else None
        run = CrawlRun(spider=spider, args=dict(args), status=CrawlStatus.running,
                       source_id=source.id if source else None)
        session.add(run)
        session.flush()
        return run.id


def _published(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _rounds(records: list[ArticleRecord]) -> list[list[ArticleRecord]]:
    """The records in rounds that name each URL at most once: round k holds each URL's k-th
    record, so a batch that names a page twice is stored as if one call followed the other."""
    rounds: list[list[ArticleRecord]] = []
    seen: Counter[str] = Counter()
    for record in records:
        k = seen[record.url]
        seen[record.url] += 1
        if k == len(rounds):
            rounds.append([])
        rounds[k].append(record)
    return rounds


def _chunks(values: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(values), size):
        yield values[i:i + size]


def _store_round(session: Session, records: list[ArticleRecord], run_id: int,
                 counts: StoreCounts) -> None:
    """Upsert pages with distinct URLs and their pairs in a handful of statements, whatever the
    number of pages: one query per kind of row read, one multi-row insert per kind written."""
    urls = [r.url for r in records]
    stored: dict[str, Article] = {}
    for chunk in _chunks(urls):
        stored.update((a.url, a) for a in session.scalars(
            select(Article).where(Article.url.in_(chunk))))
    sources = _sources_for(session, [u for u in urls if u not in stored])
    changed: list[tuple[Article, ArticleRecord]] = []
    for record in records:
        digest = article_content_hash(record.title, record.text)
        article = stored.get(record.url)
        if article is None:
            article = Article(url=record.url,
                              source_id=sources[urlsplit(record.url).netloc.lower()].id,
                              crawl_run_id=run_id, title=record.title, text=record.text,
                              topic=record.topic, language=record.language, content_hash=digest,
                              author=record.author, published=_published(record.published))
            session.add(article)
            counts.stored += 1
        elif article.content_hash == digest and article.topic == record.topic:
            counts.unchanged += 1
            continue
        else:
            article.title, article.text, article.content_hash = record.title, record.text, digest
            article.topic, article.language, article.crawl_run_id = (
                record.topic, record.language, run_id)
            article.author, article.published = record.author, _published(record.published)
            counts.updated += 1
        changed.append((article, record))
    session.flush()  # one multi-row INSERT for the new pages, which gives them their ids
    _sync_qa_pairs(session, changed, run_id, counts)


def _sync_qa_pairs(session: Session, changed: list[tuple[Article, ArticleRecord]], run_id: int,
                   counts: StoreCounts) -> None:
    """Add each page's pairs not stored anywhere yet; drop the pairs a page no longer has."""
    current: dict[int, set[str]] = {article.id: set() for article, _ in changed}
    for chunk in _chunks(list(current)):
        for article_id, digest in session.execute(select(
                QAPair.article_id, QAPair.content_hash).where(QAPair.article_id.in_(chunk))):
            current[article_id].add(digest)
    wanted: dict[int, dict[str, QARecord]] = {}
    for article, record in changed:
        pairs = wanted.setdefault(article.id, {})
        for qa in record.qa_pairs:
            pairs.setdefault(qa_content_hash(qa.question, qa.answer), qa)
    new = sorted({h for article_id, pairs in wanted.items() for h in pairs
                  if h not in current[article_id]})
    # A pair already stored for another page is that page's: never store it twice.
    taken: set[str] = set()
    for chunk in _chunks(new):
        taken.update(session.scalars(select(QAPair.content_hash)
                                     .where(QAPair.content_hash.in_(chunk))))
    rows: list[dict[str, Any]] = []
    for article, record in changed:
        for h, qa in wanted[article.id].items():
            if h in current[article.id] or h in taken:
                continue
            rows.append({"article_id": article.id, "crawl_run_id": run_id,
                         "question": qa.question, "answer": qa.answer,
                         "source": record.source or record.url,
                         "focus_area": qa.focus_area or record.focus_area or record.title,
                         "qtype": qa.qtype, "topic": record.topic, "content_hash": h})
            taken.add(h)
    if rows:
        session.execute(insert(QAPair), rows)  # executemany: no per-row ORM bookkeeping
        counts.qa_added += len(rows)
    in_snapshots = select(DatasetMember.qa_pair_id).where(DatasetMember.qa_pair_id.is_not(None))
    for article_id, hashes in current.items():
        stale = hashes - wanted[article_id].keys()
        if stale:  # pairs frozen into a dataset snapshot stay so it can be rebuilt
            result = session.execute(delete(QAPair).where(
                QAPair.article_id == article_id, QAPair.content_hash.in_(stale),
                QAPair.id.not_in(in_snapshots)))
            counts.qa_removed += result.rowcount or 0


# Attempts at a batch whose insert lost a race: another job stored the same page or pair
# between this one's check and its insert. The next attempt sees that row and counts it.
STORE_ATTEMPTS = 4


def store_articles(run_id: int, records: Iterable[ArticleRecord], *,
                   url: str | None = None) -> StoreCounts:
    """Upsert articles and their QA pairs in one transaction and add the counts to the run.

    The statements do not grow with the number of records (see ``_store_round``), so callers
    should pass many at once: the crawl's store pipeline passes ``ARTICLE_STORE_BATCH_SIZE``."""
    records = list(records)
    for attempt in range(STORE_ATTEMPTS):
        counts = StoreCounts()
        try:
            with session_scope(url) as session:
                run = session.get(CrawlRun, run_id)
                if run is None:
                    raise StoreError(f"crawl run #{run_id} does not exist")
                for chunk in _rounds(records):
                    _store_round(session, chunk, run_id, counts)
                start = _start_url(run.args)
                if run.source_id is None and start and (
                        counts.stored + counts.updated + counts.unchanged):
                    run.source_id = _source_for(session, start).id
                run.items_stored += counts.stored
                run.items_updated += counts.updated
                run.items_unchanged += counts.unchanged
            return counts
        except IntegrityError:
            if attempt == STORE_ATTEMPTS - 1:
                raise
            time.sleep(0.05 * (attempt + 1) + random.random() * 0.05)
    raise AssertionError("unreachable")


def iter_article_texts(*, url: str | None = None,
                       batch_size: int = 500) -> Iterator[tuple[str, str]]:
    """(url, text) of every stored article, in batches: near-duplicate detection indexes them."""
    ensure_schema(url)  # a crawl's first pipeline to open may find a store not created yet
    last_id = 0
    while True:
        with session_scope(url) as session:
            rows = session.execute(select(Article.id, Article.url, Article.text)
                                   .where(Article.id > last_id).order_by(Article.id)
                                   .limit(batch_size)).all()
        if not rows:
            return
        last_id = rows[-1][0]
        for _, page_url, text in rows:
            yield page_url, text


def finish_crawl_run(run_id: int, *, status: CrawlStatus | str, pages_seen: int,
                     items_dropped: int, drop_reasons: dict[str, int],
                     error: str | None = None, url: str | None = None) -> None:
    """Close the run with its final status and counts."""
    with session_scope(url) as session:
        run = session.get(CrawlRun, run_id)
        if run is None:
            raise StoreError(f"crawl run #{run_id} does not exist")
        run.status = CrawlStatus(status)
        run.pages_seen = pages_seen
        run.items_dropped = items_dropped
        run.drop_reasons = dict(drop_reasons)
        run.error = error
        run.finished_at = utcnow()


def _summary(run: CrawlRun, qa_pairs: int) -> CrawlRunSummary:
    return record_of(CrawlRunSummary, run, qa_pairs=qa_pairs)


def _qa_counts(session: Session, run_ids: list[int]) -> dict[int, int]:
    rows = session.execute(select(QAPair.crawl_run_id, func.count()).where(
        QAPair.crawl_run_id.in_(run_ids)).group_by(QAPair.crawl_run_id))
    return {run_id: n for run_id, n in rows}


def get_crawl_run(run_id: int, *, url: str | None = None) -> CrawlRunSummary:
    with session_scope(url) as session:
        run = session.get(CrawlRun, run_id)
        if run is None:
            raise StoreError(f"crawl run #{run_id} does not exist")
        return _summary(run, _qa_counts(session, [run_id]).get(run_id, 0))


def list_crawl_runs(limit: int = 50, *, url: str | None = None) -> list[CrawlRunSummary]:
    """The newest crawl runs first, with the number of QA pairs each one added."""
    ensure_schema(url)
    with session_scope(url) as session:
        runs = list(session.scalars(select(CrawlRun).order_by(CrawlRun.id.desc()).limit(limit)))
        qa = _qa_counts(session, [r.id for r in runs])
        return [_summary(r, qa.get(r.id, 0)) for r in runs]
