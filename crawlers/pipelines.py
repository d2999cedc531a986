"""Item pipelines, one job each: clean the text, drop duplicates, store in the registry."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from scrapy import signals
from scrapy.crawler import Crawler
from scrapy.exceptions import DropItem, NotConfigured
from w3lib.url import canonicalize_url

from crawlers.items import QAPageItem, QAPairItem
from crawlers.text import clean_text, collapse_whitespace, strip_markup
from registry.article_store import (
    ArticleRecord,
    QARecord,
    article_content_hash,
    finish_crawl_run,
    open_crawl_run,
    qa_content_hash,
    store_articles,
)
from registry.models import CrawlStatus

logger = logging.getLogger(__name__)

PROGRESS_MARKER = "loraforge-progress"  # crawlers.run parses these log lines
TRACKING_PARAMS = ("utm_", "fbclid", "gclid", "mc_cid", "mc_eid")


class CleanPipeline:
    """Normalize whitespace and strip markup left in the text; punctuation, digits and case stay."""

    def process_item(self, item: QAPageItem) -> QAPageItem:
        item.focus_area = collapse_whitespace(strip_markup(item.focus_area))
        item.text = clean_text(item.text)
        pairs = [QAPairItem(collapse_whitespace(strip_markup(qa.question)), clean_text(qa.answer),
                            qa.qtype or None) for qa in item.qa_pairs]
        item.qa_pairs = [qa for qa in pairs if qa.question and qa.answer]
        if not item.qa_pairs:
            raise DropItem(f"no question with an answer: {item.url}")
        return item


def canonical_url(url: str) -> str:
    """One spelling per page: no fragment, no tracking parameters, sorted query, lowercase host."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
             if not k.lower().startswith(TRACKING_PARAMS)]
    return canonicalize_url(urlunsplit(parts._replace(query=urlencode(query), fragment="")))


class DeduplicatePipeline:
    """Drop a page seen before in this run, by canonical URL or by content; drop repeated pairs."""

    def __init__(self) -> None:
        self.urls: set[str] = set()
        self.pages: set[str] = set()
        self.pairs: set[str] = set()

    def process_item(self, item: QAPageItem) -> QAPageItem:
        # The canonical URL is written back because it is the key the store upserts on.
        item.url = canonical_url(item.url)
        if item.url in self.urls:
            raise DropItem(f"duplicate url: {item.url}", log_level="INFO")
        digest = article_content_hash(item.focus_area, item.text)
        if digest in self.pages:
            raise DropItem(f"duplicate content: {item.url}", log_level="INFO")
        self.urls.add(item.url)
        self.pages.add(digest)
        unique = []
        for qa in item.qa_pairs:
            key = qa_content_hash(qa.question, qa.answer)
            if key not in self.pairs:
                self.pairs.add(key)
                unique.append(qa)
        item.qa_pairs = unique
        return item


def _drop_reason(exception: BaseException) -> str:
    # DropItem messages read "<reason>: <detail>"; the reason alone is what we tally.
    return str(exception).split(":", 1)[0].strip() or type(exception).__name__


class ArticleStorePipeline:
    """Store pages and QA pairs through ``registry.article_store``, in batches, as one crawl run."""

    def __init__(self, crawler: Crawler, url: str, batch_size: int) -> None:
        self.crawler = crawler
        self.url = url
        self.batch_size = max(1, batch_size)
        self.batch: list[ArticleRecord] = []
        self.run_id: int | None = None
        self.counts: Counter[str] = Counter()
        self.drop_reasons: Counter[str] = Counter()

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> ArticleStorePipeline:
        url = crawler.settings.get("ARTICLE_STORE_URL")
        if not url:
            raise NotConfigured("ARTICLE_STORE_URL is empty")
        pipeline = cls(crawler, url, crawler.settings.getint("ARTICLE_STORE_BATCH_SIZE", 10))
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
        self._log_progress()

    def process_item(self, item: QAPageItem) -> QAPageItem:
        self.batch.append(ArticleRecord(
            url=item.url, title=item.focus_area, text=item.text, topic=item.topic,
            language=item.language, focus_area=item.focus_area,
            qa_pairs=[QARecord(qa.question, qa.answer, qa.qtype) for qa in item.qa_pairs],
        ))
        if len(self.batch) >= self.batch_size:
            self._flush()
        return item

    def close_spider(self) -> None:
        self._flush()

    def _flush(self) -> None:
        if not self.batch or self.run_id is None:
            return
        # A synchronous write pauses downloads for a few milliseconds per batch; fine at crawl
        # rates, and it keeps the transaction simple.
        counts = store_articles(self.run_id, self.batch, url=self.url)
        self.batch = []
        self.counts.update({"stored": counts.stored, "updated": counts.updated,
                            "unchanged": counts.unchanged, "qa_added": counts.qa_added})
        self._log_progress()

    def _pages_seen(self) -> int:
        return int(self.crawler.stats.get_value("loraforge/pages_seen", 0))

    def _log_progress(self) -> None:
        logger.info(
            "%s run=%d pages=%d stored=%d updated=%d unchanged=%d dropped=%d qa=%d",
            PROGRESS_MARKER, self.run_id, self._pages_seen(), self.counts["stored"],
            self.counts["updated"], self.counts["unchanged"], sum(self.drop_reasons.values()),
            self.counts["qa_added"],
        )

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
            if stats.get_value("robotstxt/forbidden"):
                return CrawlStatus.failed, "robots.txt forbids every page that was found"
            return CrawlStatus.failed, "no page was found to crawl"
        return CrawlStatus.finished, None

    def spider_closed(self, spider: Any, reason: str) -> None:
        if self.run_id is None:
            return
        status, error = self._outcome(reason)
        finish_crawl_run(self.run_id, status=status, pages_seen=self._pages_seen(),
                         items_dropped=sum(self.drop_reasons.values()),
                         drop_reasons=dict(self.drop_reasons), error=error, url=self.url)
        self._log_progress()
        logger.info("crawl run #%d %s", self.run_id, status.value)
