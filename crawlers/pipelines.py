"""Item pipelines, one job each: clean, validate, drop duplicates, store in the registry.

Settings share a prefix per pipeline: ``CLEAN_*``, ``VALIDATE_*``, ``DEDUPE_*`` and
``ARTICLE_STORE_*``.
Drops that are not whole items (a page that is not HTML, one short answer) are counted in the
crawl stats under ``loraforge/dropped/<reason>`` and land in the run's drop reasons too.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from concurrent.futures import Future
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from scrapy import signals
from scrapy.crawler import Crawler
from scrapy.exceptions import DropItem
from scrapy.settings import BaseSettings
from w3lib.url import canonicalize_url

from core import jobs
from core.settings import get_settings
from crawlers.items import ArticleItem, QAPageItem, clean_item
from crawlers.near_duplicates import NearDuplicateIndex
from crawlers.offload import Offload
from crawlers.text import DEFAULT_STEPS, CleanSteps
from registry.article_store import (
    ArticleRecord,
    QARecord,
    StoreCounts,
    article_content_hash,
    finish_crawl_run,
    iter_article_texts,
    open_crawl_run,
    qa_content_hash,
    store_articles,
)
from registry.models import CrawlStatus

logger = logging.getLogger(__name__)

TRACKING_PARAMS = ("utm_", "fbclid", "gclid", "mc_cid", "mc_eid")
DROP_STAT_PREFIX = "loraforge/dropped/"
Item = QAPageItem | ArticleItem
MAX_WRITES_IN_FLIGHT = 2
# Failed batch writes in a row that are retried quietly (a store restarting, a lock held a
# while); from the next one on, each failure is raised as the item's error, as before batching.
QUIET_WRITE_RETRIES = 2
# Pages that may wait in memory for a store that keeps failing (ARTICLE_STORE_MAX_PENDING); past
# them the crawl closes rather than grow without bound, and a resume fetches them again.
MAX_PENDING = 5000
STORE_DOWN = "store_unavailable"  # the close reason then
INLINE = Offload(0)
RUN_ID_FILE = "loraforge-run-id"  # in the JOBDIR: which run a resume continues
CLEAN_STOP_FILE = "loraforge-closed"  # in the JOBDIR: Scrapy closed it, its queue is whole


def count_drop(stats: Any, reason: str, amount: int = 1) -> None:
    """Tally a drop that is not an item drop (a page, a single pair) under its reason."""
    stats.inc_value(f"{DROP_STAT_PREFIX}{reason}", amount)



def store_url(settings: BaseSettings) -> str:
    """ARTICLE_STORE_URL if the crawl sets it, else the store LoRAForge is configured for
    (LORAFORGE_DATABASE_URL or LORAFORGE_HOME), read now, when the crawl opens."""
    return settings.get("ARTICLE_STORE_URL") or get_settings().resolved_database_url

class CleanPipeline:
    """The study's cleaning, each step switched by a ``CLEAN_*`` setting; drop a page left empty.

    Punctuation, digits and case always stay: a language model needs them.
    """

    def __init__(self, steps: CleanSteps = DEFAULT_STEPS) -> None:
        self.steps = steps

    @classmethod
    def from_settings(cls, settings: BaseSettings) -> CleanPipeline:
        return cls(CleanSteps.from_settings(settings))

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> CleanPipeline:
        return cls.from_settings(crawler.settings)

    def process_item(self, item: Item) -> Item:
        if item.cleaned_with != self.steps:  # a page worker may have cleaned it already
            clean_item(item, self.steps)
        if isinstance(item, ArticleItem):
            if not item.text:
                raise DropItem(f"no main text: {item.url}")
            return item
        if not item.qa_pairs:
            raise DropItem(f"no question with an answer: {item.url}")
        return item


class ValidatePipeline:
    """Drop pairs whose answer is too short and pages too short or in an unwanted language.

    ``VALIDATE_MIN_ANSWER_CHARS``, ``VALIDATE_MIN_TEXT_CHARS``, ``VALIDATE_LANGUAGES`` (comma
    separated ISO 639-1 codes; empty accepts any). With a filter, or when the page declares no
    language, it is detected from the text (py3langid) when there is enough of it.
    """

    def __init__(self, min_answer_chars: int = 1, min_text_chars: int = 0,
                 languages: tuple[str, ...] = (), stats: Any = None) -> None:
        self.min_answer_chars = min_answer_chars
        self.min_text_chars = min_text_chars
        self.languages = tuple(lang.strip().lower() for lang in languages if lang.strip())
        self.stats = stats

    @classmethod
    def from_settings(cls, settings: BaseSettings, stats: Any) -> ValidatePipeline:
        return cls(settings.getint("VALIDATE_MIN_ANSWER_CHARS", 1),
                   settings.getint("VALIDATE_MIN_TEXT_CHARS", 0),
                   tuple(settings.getlist("VALIDATE_LANGUAGES")), stats)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> ValidatePipeline:
        return cls.from_settings(crawler.settings, crawler.stats)

    def process_item(self, item: Item) -> Item:
        kept = [qa for qa in item.qa_pairs if len(qa.answer) >= self.min_answer_chars]
        if len(kept) < len(item.qa_pairs) and self.stats is not None:
            count_drop(self.stats, "answer too short", len(item.qa_pairs) - len(kept))
        if not kept and isinstance(item, QAPageItem):
            raise DropItem(f"answer too short: every answer on {item.url} is under "
                           f"{self.min_answer_chars} characters")
        item.qa_pairs = kept
        if len(item.text) < self.min_text_chars:
            raise DropItem(f"text too short: {item.url} has {len(item.text)} characters")
        # The page's own declaration is usually right; detection (a second to load its model)
        # runs when a filter depends on it or the page declares nothing.
        if self.languages or not item.language:
            item.language = detect_language(item.text) or item.language
        if self.languages and (item.language or "").split("-")[0].lower() not in self.languages:
            raise DropItem(f"language not wanted: {item.url} is {item.language or 'unknown'}")
        return item


def detect_language(text: str, min_chars: int = 40) -> str | None:
    """The ISO 639-1 code of the text's language, or None when it is too short to tell."""
    if len(text) < min_chars:
        return None
    import py3langid  # loads its model on first use: only crawls that validate pay for it

    # The first couple of thousand characters decide as well as the whole page, at a fraction.
    return py3langid.classify(text[:2000])[0]


def canonical_url(url: str) -> str:
    """One spelling per page: no fragment, no tracking parameters, sorted query, lowercase host."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
             if not k.lower().startswith(TRACKING_PARAMS)]
    return canonicalize_url(urlunsplit(parts._replace(query=urlencode(query), fragment="")))


class DeduplicatePipeline:
    """Drop a page seen before by canonical URL or exact content in this run, or nearly equal
    (MinHash/LSH) to a page of this run or of the store; drop pairs repeated within the run.

    ``DEDUPE_NEAR_THRESHOLD`` is the Jaccard similarity of word 3-shingles above which two pages
    are near duplicates (0 switches the check off).
    """

    def __init__(self, near_threshold: float = 0.0, store_url: str | None = None) -> None:
        self.urls: set[str] = set()
        self.pages: set[str] = set()
        self.pairs: set[str] = set()
        self.store_url = store_url
        self.near = NearDuplicateIndex(near_threshold) if near_threshold > 0 else None

    @classmethod
    def from_settings(cls, settings: BaseSettings, store_url: str | None) -> DeduplicatePipeline:
        return cls(settings.getfloat("DEDUPE_NEAR_THRESHOLD", 0.0), store_url)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> DeduplicatePipeline:
        return cls.from_settings(crawler.settings, store_url(crawler.settings))

    def open_spider(self) -> None:
        self.load_stored()

    def load_stored(self) -> None:
        """Index the stored pages so that a near copy of one is dropped, not stored again."""
        if self.near is None or not self.store_url:
            return
        for url, text in iter_article_texts(url=self.store_url):
            self.near.add(url, text)
        logger.info("near-duplicate index holds %d stored pages", self.near.size)

    def process_item(self, item: Item) -> Item:
        # The canonical URL is written back because it is the key the store upserts on.
        item.url = canonical_url(item.url)
        if item.url in self.urls:
            raise DropItem(f"duplicate url: {item.url}", log_level="INFO")
        digest = item.content_hash or article_content_hash(item.focus_area, item.text)
        if digest in self.pages:
            raise DropItem(f"duplicate content: {item.url}", log_level="INFO")
        if self.near is not None:
            other = self.near.match(item.url, item.text, add=True, known=item.signature)
            item.signature = None  # used up; an array would trip feed exports (-O items.json)
            if other is not None:
                raise DropItem(f"near duplicate: {item.url} nearly equals {other}",
                               log_level="INFO")
        self.urls.add(item.url)
        self.pages.add(digest)
        unique = []
        for qa in item.qa_pairs:
            key = qa.content_hash or qa_content_hash(qa.question, qa.answer)
            if key not in self.pairs:
                self.pairs.add(key)
                unique.append(qa)
        item.qa_pairs = unique
        return item


def item_to_record(item: Item) -> ArticleRecord:
    if isinstance(item, ArticleItem):
        return ArticleRecord(url=item.url, title=item.title, text=item.text, topic=item.topic,
                             language=item.language, author=item.author,
                             published=item.published, source=item.source)
    return ArticleRecord(
        url=item.url, title=item.focus_area, text=item.text, topic=item.topic,
        language=item.language, focus_area=item.focus_area, source=item.source,
        qa_pairs=[QARecord(qa.question, qa.answer, qa.qtype, qa.focus_area)
                  for qa in item.qa_pairs],
    )


def _drop_reason(exception: BaseException) -> str:
    # DropItem messages read "<reason>: <detail>"; the reason alone is what we tally.
    return str(exception).split(":", 1)[0].strip() or type(exception).__name__


class ArticleStorePipeline:
    """Store pages and QA pairs through ``registry.article_store``, in batches, as one crawl run."""

    def __init__(self, crawler: Crawler, url: str, batch_size: int,
                 flush_seconds: float = 2.0, writer_process: bool = True,
                 max_pending: int = MAX_PENDING) -> None:
        self.crawler = crawler
        self.url = url
        self.batch_size = max(1, batch_size)
        self.flush_seconds = flush_seconds
        self.max_pending = max(1, max_pending)
        self.last_error = ""  # the last failed write's cause, one line
        self.closing = False
        self.batch: list[ArticleRecord] = []
        self.last_flush = time.monotonic()
        self.writer = Offload(1 if writer_process else 0)
        self.writes: deque[tuple[Future[StoreCounts], list[ArticleRecord]]] = deque()
        self.run_id: int | None = None
        self.failed_writes = 0  # in a row
        self.counts: Counter[str] = Counter()
        self.drop_reasons: Counter[str] = Counter()

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> ArticleStorePipeline:
        pipeline = cls(crawler, store_url(crawler.settings),
                       crawler.settings.getint("ARTICLE_STORE_BATCH_SIZE", 100),
                       crawler.settings.getfloat("ARTICLE_STORE_FLUSH_SECONDS", 2.0),
                       crawler.settings.getbool("ARTICLE_STORE_WRITER_PROCESS", True),
                       crawler.settings.getint("ARTICLE_STORE_MAX_PENDING", MAX_PENDING))
        crawler.signals.connect(pipeline.item_dropped, signal=signals.item_dropped)
        crawler.signals.connect(pipeline.item_error, signal=signals.item_error)
        # Only the spider_closed signal carries the close reason (finished, shutdown, ...), and
        # it fires after close_spider, so the run row is finished there.
        crawler.signals.connect(pipeline.spider_closed, signal=signals.spider_closed)
        return pipeline

    def open_spider(self) -> None:
        spider = self.crawler.spider
        self.run_id = open_crawl_run(spider.name, getattr(spider, "crawl_args", {}), url=self.url)
        logger.info("crawl run #%d opened in the article store", self.run_id)
        jobdir = self.crawler.settings.get("JOBDIR")
        if jobdir:
            Path(jobdir).mkdir(parents=True, exist_ok=True)
            (Path(jobdir) / CLEAN_STOP_FILE).unlink(missing_ok=True)
            (Path(jobdir) / RUN_ID_FILE).write_text(str(self.run_id))
        self._log_progress()

    def process_item(self, item: Item) -> Item:
        self.batch.append(item_to_record(item))
        # A slow site fills a batch slowly: the age bound keeps the store and the progress
        # reports current there, the size bound keeps statements few on a fast one. After a
        # failed write only the age bound applies: a store that is down is not sent the
        # growing batch again with every page.
        aged = time.monotonic() - self.last_flush >= self.flush_seconds
        try:
            if aged or (len(self.batch) >= self.batch_size and not self.failed_writes):
                self._flush()
        finally:
            # Also when the flush raised (too many failed writes in a row): on a slow site every
            # page is flushed by age, so every page raises, and the crawl would go on to its end
            # with the store down.
            if self.failed_writes and len(self.batch) >= self.max_pending and not self.closing:
                self._close_for_the_store()
        return item

    def _close_for_the_store(self) -> None:
        from scrapy.utils.defer import deferred_from_coro

        self.closing = True
        logger.error("the store failed %d writes in a row (%s) and %d pages wait for it; closing "
                     "the crawl. Run it again with --resume once the store is back: the pages "
                     "not stored are fetched again", self.failed_writes, self.last_error,
                     len(self.batch))
        deferred_from_coro(self.crawler.engine.close_spider_async(reason=STORE_DOWN))

    def close_spider(self) -> None:
        try:
            self._flush()
            self._collect(wait_for=0)
        finally:
            self.writer.close()

    def _flush(self) -> None:
        self.last_flush = time.monotonic()
        if not self.batch or self.run_id is None:
            return
        # One transaction of a few statements per batch (registry.article_store), written by
        # the writer process while this one goes on crawling; batches are written in order. A
        # kill -9 loses at most the batches not yet committed, and a resume after one starts
        # over (crawlers.run._prepare_jobdir): no page the JOBDIR counts as done goes missing.
        # The writer starts with the first full batch: a small crawl's few pages are written
        # here, without waiting for a process to start. Once it has writes out, every batch
        # goes through it, so batches land in order.
        writer = self.writer if self.writes or len(self.batch) >= self.batch_size else INLINE
        future = writer.submit(partial(store_articles, url=self.url), self.run_id, self.batch)
        self.writes.append((future, self.batch))
        self.batch = []
        # Past two batches in flight the store is the bottleneck: wait for it, bounding memory.
        self._collect(wait_for=MAX_WRITES_IN_FLIGHT)

    def _collect(self, wait_for: int) -> None:
        """Count the finished writes; block until at most ``wait_for`` are still in flight. A
        failed write's pages go back into the batch; the failure is logged, and raised (as the
        current item's error) once more than QUIET_WRITE_RETRIES writes failed in a row, and
        always at close, when no later batch would take them."""
        while self.writes and (self.writes[0][0].done() or len(self.writes) > wait_for):
            future, records = self.writes.popleft()
            try:
                counts = future.result()
            except Exception as exc:
                # The pages go into the next batch: a store that recovers still gets them all.
                self.batch[:0] = records
                self.failed_writes += 1
                self.last_error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                if self.failed_writes > QUIET_WRITE_RETRIES or not wait_for:
                    raise
                logger.warning("writing %d pages to the store failed (%s); they are written "
                               "with the next batch", len(records), self.last_error)
                continue
            self.failed_writes = 0
            self.counts.update({"stored": counts.stored, "updated": counts.updated,
                                "unchanged": counts.unchanged, "qa_added": counts.qa_added})
            self._log_progress()

    def _pages_seen(self) -> int:
        return int(self.crawler.stats.get_value("loraforge/pages_seen", 0))

    def _all_drop_reasons(self) -> Counter[str]:
        reasons = Counter(self.drop_reasons)
        for key, value in self.crawler.stats.get_stats().items():
            if key.startswith(DROP_STAT_PREFIX):
                reasons[key.removeprefix(DROP_STAT_PREFIX)] += int(value)
        return reasons

    def _log_progress(self) -> None:
        counts = {"run_id": self.run_id, "pages": self._pages_seen(),
                  "stored": self.counts["stored"], "updated": self.counts["updated"],
                  "unchanged": self.counts["unchanged"],
                  "dropped": sum(self._all_drop_reasons().values()),
                  "qa_pairs": self.counts["qa_added"]}
        jobs.emit("progress", **counts)  # to crawlers.run, when it started this crawl
        logger.info("crawl run #%(run_id)d: %(pages)d pages, %(stored)d stored, %(updated)d "
                    "updated, %(unchanged)d unchanged, %(dropped)d dropped, %(qa_pairs)d QA "
                    "pairs", counts)

    def item_dropped(self, item: Any, response: Any, exception: BaseException, spider: Any) -> None:
        self.drop_reasons[_drop_reason(exception)] += 1

    def item_error(self, item: Any, response: Any, spider: Any, failure: Any) -> None:
        self.drop_reasons[f"error {type(failure.value).__name__}"] += 1

    def _outcome(self, reason: str) -> tuple[CrawlStatus, str | None]:
        stats = self.crawler.stats
        if reason == "shutdown":
            return CrawlStatus.interrupted, "interrupted; resume with --resume"
        if reason != "finished" and not reason.startswith("closespider"):
            return CrawlStatus.failed, f"spider closed: {reason}"
        if self._pages_seen() == 0:
            error = stats.get_value("loraforge/first_error")
            if error:
                return CrawlStatus.failed, f"no page could be fetched ({error})"
            if stats.get_value("robotstxt/unreachable"):
                return CrawlStatus.failed, ("the site's robots.txt could not be fetched, so "
                                            "nothing was crawled (RFC 9309); try again later")
            if stats.get_value("robotstxt/forbidden"):
                return CrawlStatus.failed, "robots.txt forbids every page that was found"
            return CrawlStatus.failed, "no page was found to crawl"
        return CrawlStatus.finished, None

    def spider_closed(self, spider: Any, reason: str) -> None:
        if self.run_id is None:
            return
        status, error = self._outcome(reason)
        unsaved = len(self.batch)  # pages a failing store never took, even at close
        if unsaved:
            status, error = CrawlStatus.failed, (
                f"{unsaved} pages could not be written to the store ({self.last_error}); run "
                "the crawl again with --resume once the store is back: they are fetched again")
        reasons = self._all_drop_reasons()
        finish_crawl_run(self.run_id, status=status, pages_seen=self._pages_seen(),
                         items_dropped=sum(reasons.values()),
                         drop_reasons=dict(reasons), error=error, url=self.url)
        self._log_progress()
        logger.info("crawl run #%d %s", self.run_id, status.value)
        jobdir = self.crawler.settings.get("JOBDIR")
        # With pages unsaved, the JOBDIR's queue counts them as done: leave it unmarked, so a
        # resume starts over and the idempotent store keeps every page exactly once.
        if jobdir and not unsaved:
            (Path(jobdir) / CLEAN_STOP_FILE).write_text(status.value)
