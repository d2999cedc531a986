"""What every LoRAForge spider shares: sitemap and start-URL seeding, a page cap, same-site link
following, and named reasons for pages that yield nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urljoin, urlsplit

import scrapy
from scrapy.exceptions import DownloadCancelledError, IgnoreRequest
from scrapy.http import Response
from scrapy.linkextractors import LinkExtractor
from scrapy.settings import BaseSettings
from scrapy.spidermiddlewares.httperror import HttpError
from scrapy.utils.sitemap import Sitemap
from twisted.python.failure import Failure

from crawlers.offload import PageWorkers, process_count
from crawlers.page_work import Ahead
from crawlers.pipelines import count_drop
from crawlers.responses import html_text


def split_list(value: str | list[str] | None) -> list[str]:
    """A spider argument given as "a,b,c" (``-a``) or as a list (in-process callers)."""
    if value is None:
        return []
    items = value if isinstance(value, list) else value.split(",")
    return [item.strip() for item in items if item.strip()]


# scrapy-redis keeps the request queue and the seen-fingerprints set in Redis, so several
# machines crawling one site share them: each page is fetched by exactly one of them.
REDIS_SCHEDULER = {
    "SCHEDULER": "scrapy_redis.scheduler.Scheduler",
    "DUPEFILTER_CLASS": "scrapy_redis.dupefilter.RFPDupeFilter",
    "SCHEDULER_PERSIST": True,  # an interrupted crawl resumes from the shared queue
}


# Page workers start once a crawl has had this many pages: a smaller crawl is over before a
# worker would have imported its modules (a second or two), and pays nothing for one.
PAGES_BEFORE_WORKERS = 50


class StoreSpider(scrapy.Spider):
    """Base of the spiders that fill the article store; subclasses implement ``parse``.

    Setting ``REDIS_URL`` (``-s REDIS_URL=redis://host:6379/0``) switches to scrapy-redis's
    scheduler and dupefilter; without it nothing about Redis is imported.
    """

    @classmethod
    def update_settings(cls, settings: BaseSettings) -> None:
        super().update_settings(settings)
        if settings.get("REDIS_URL"):
            for name, value in REDIS_SCHEDULER.items():
                if (settings.getpriority(name) or 0) < (settings.getpriority("REDIS_URL") or 0):
                    settings.set(name, value, priority="cmdline")

    def __init__(self, start_urls: list[str], sitemap_urls: list[str],
                 max_pages: str | int | None = None, allowed_domains: list[str] | None = None,
                 link_extractor: LinkExtractor | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        if not (start_urls or sitemap_urls):
            raise ValueError(f"the {self.name} spider needs a start URL or a sitemap URL")
        self.seed_urls, self.sitemap_urls = start_urls, sitemap_urls
        self.max_pages = int(max_pages) if max_pages not in (None, "") else None
        self.allowed_domains = allowed_domains or sorted(
            {urlsplit(u).hostname or "" for u in start_urls + sitemap_urls})
        self.pages_requested = 0
        self._seen_urls: set[str] = set()  # every page links the menu: count each URL once
        self.links = link_extractor or LinkExtractor()
        self.workers = PageWorkers(0)  # page extraction; from_crawler sizes it
        self.ahead = Ahead()  # pipeline work the workers do too; from_crawler reads it


    @classmethod
    def from_crawler(cls, crawler: Any, *args: Any, **kwargs: Any) -> StoreSpider:
        spider = super().from_crawler(crawler, *args, **kwargs)
        spider.workers = PageWorkers(process_count(crawler.settings.get("EXTRACT_PROCESSES")),
                                     start_after=PAGES_BEFORE_WORKERS,
                                     preload=("crawlers.page_work",))
        spider.ahead = Ahead.from_settings(crawler.settings)
        return spider

    def closed(self, reason: str) -> None:
        self.workers.close()

    async def start(self) -> AsyncIterator[scrapy.Request]:
        for url in self.sitemap_urls:
            yield scrapy.Request(url, callback=self.parse_sitemap, errback=self.on_error)
        for request in self.page_requests(self.seed_urls):
            yield request

    def page_requests(self, urls: list[str], depth: int = 0) -> Iterator[scrapy.Request]:
        # max_pages caps the pages we ask for, so a capped crawl never over-fetches.
        for url in urls:
            if url in self._seen_urls:
                continue
            if self.max_pages is not None and self.pages_requested >= self.max_pages:
                return
            self._seen_urls.add(url)
            self.pages_requested += 1
            yield scrapy.Request(url, callback=self.parse, errback=self.on_error,
                                 meta={"depth": depth})

    def wanted(self, url: str) -> bool:
        """Whether a sitemap entry is fetched; subclasses add URL patterns."""
        return True

    def parse_sitemap(self, response: Response) -> Iterator[scrapy.Request]:
        sitemap = Sitemap(response.body)
        locs = [urljoin(response.url, entry["loc"]) for entry in sitemap]
        if sitemap.type == "sitemapindex":
            for loc in locs:
                yield scrapy.Request(loc, callback=self.parse_sitemap, errback=self.on_error)
        else:
            yield from self.page_requests([u for u in locs if self.wanted(u)])

    def follow_links(self, response: Response) -> Iterator[scrapy.Request]:
        # Filtered by hostname here: LinkExtractor's allow_domains does not match IP hosts.
        depth = response.meta.get("depth", 0) + 1
        yield from self.page_requests([
            link.url for link in self.links.extract_links(response)
            if urlsplit(link.url).hostname in self.allowed_domains], depth)

    def page_html(self, response: Response) -> str | None:
        """The page's HTML, counted as seen; None (dropped, with a logged reason) if not HTML."""
        self.crawler.stats.inc_value("loraforge/pages_seen")
        decoded = html_text(response)
        if decoded.html is None:
            self.drop_page(response.url, decoded.reason or "not html")
            return None
        if decoded.reason:
            self.logger.warning("repaired %s: %s", response.url, decoded.reason)
            self.crawler.stats.inc_value("loraforge/encoding_repaired")
        return decoded.html

    def drop_page(self, url: str, reason: str) -> None:
        """Log and count a page that yields nothing, under a reason the crawl run shows."""
        self.logger.warning("dropped %s: %s", url, reason)
        count_drop(self.crawler.stats, reason.split(" (")[0])

    def on_error(self, failure: Failure) -> None:
        if failure.check(HttpError):
            message = f"HTTP {failure.value.response.status}"
        elif failure.check(IgnoreRequest):
            return  # robots.txt said no: the site's wish, not a failure
        elif failure.check(DownloadCancelledError):
            self.crawler.stats.inc_value("loraforge/pages_seen")
            self.drop_page(failure.request.url, f"too large ({failure.getErrorMessage()})")
            return
        else:
            message = failure.getErrorMessage()
        stats = self.crawler.stats
        stats.inc_value("loraforge/fetch_errors")
        if stats.get_value("loraforge/first_error") is None:
            stats.set_value("loraforge/first_error", f"{failure.request.url}: {message}")
        self.logger.warning("could not fetch %s: %s", failure.request.url, message)
