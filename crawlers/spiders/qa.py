"""The ``qa`` spider: pages of heading questions followed by their answers (FAQ and health sites).

It reads a sitemap (``sitemap_url``) or follows same-site links from ``start_url``, and yields
one ``QAPageItem`` per page that has at least one question section. Index pages yield nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urljoin, urlsplit

import scrapy
from scrapy.exceptions import IgnoreRequest
from scrapy.http import Response, TextResponse
from scrapy.linkextractors import LinkExtractor
from scrapy.spidermiddlewares.httperror import HttpError
from scrapy.utils.sitemap import Sitemap
from twisted.python.failure import Failure

from crawlers.extract import extract_page
from crawlers.items import QAPageItem, QAPairItem


class QASpider(scrapy.Spider):
    name = "qa"

    def __init__(self, start_url: str | None = None, sitemap_url: str | None = None,
                 topic: str = "health", max_pages: str | int | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        if not (start_url or sitemap_url):
            raise ValueError("the qa spider needs -a start_url=URL or -a sitemap_url=URL")
        self.start_url, self.sitemap_url, self.topic = start_url, sitemap_url, topic
        self.max_pages = int(max_pages) if max_pages not in (None, "") else None
        self.allowed_domains = sorted({urlsplit(u).hostname or "" for u in (start_url, sitemap_url)
                                       if u})
        self.crawl_args = {k: v for k, v in {"start_url": start_url, "sitemap_url": sitemap_url,
                           "topic": topic, "max_pages": self.max_pages}.items() if v is not None}
        self.pages_requested = 0
        self._seen_urls: set[str] = set()  # every page links the menu: count each URL once
        self.links = LinkExtractor()

    async def start(self) -> AsyncIterator[scrapy.Request]:
        if self.sitemap_url:
            yield scrapy.Request(self.sitemap_url, callback=self.parse_sitemap,
                                 errback=self.on_error)
        if self.start_url:
            for request in self._page_requests([self.start_url]):
                yield request

    def _page_requests(self, urls: list[str]) -> Iterator[scrapy.Request]:
        # max_pages caps the pages we ask for, so a capped crawl never over-fetches.
        for url in urls:
            if url in self._seen_urls:
                continue
            if self.max_pages is not None and self.pages_requested >= self.max_pages:
                return
            self._seen_urls.add(url)
            self.pages_requested += 1
            yield scrapy.Request(url, callback=self.parse, errback=self.on_error)

    def parse_sitemap(self, response: Response) -> Iterator[scrapy.Request]:
        sitemap = Sitemap(response.body)
        locs = [urljoin(response.url, entry["loc"]) for entry in sitemap]
        if sitemap.type == "sitemapindex":
            for loc in locs:
                yield scrapy.Request(loc, callback=self.parse_sitemap, errback=self.on_error)
        else:
            yield from self._page_requests(locs)

    def parse(self, response: Response) -> Iterator[QAPageItem | scrapy.Request]:
        if not isinstance(response, TextResponse):
            return
        self.crawler.stats.inc_value("loraforge/pages_seen")
        page = extract_page(response.body, response.url)
        if page.sections:
            yield QAPageItem(
                url=urljoin(response.url, page.canonical_url or response.url),
                focus_area=page.focus_area,
                text=page.text,
                qa_pairs=[QAPairItem(s.question, s.answer, s.qtype) for s in page.sections],
                topic=self.topic,
                language=page.language,
                fetched_url=response.url,
            )
        if self.start_url:
            # Filtered by hostname here: LinkExtractor's allow_domains does not match IP hosts.
            yield from self._page_requests([
                link.url for link in self.links.extract_links(response)
                if urlsplit(link.url).hostname in self.allowed_domains])

    def on_error(self, failure: Failure) -> None:
        if failure.check(HttpError):
            message = f"HTTP {failure.value.response.status}"
        elif failure.check(IgnoreRequest):
            return  # robots.txt said no: the site's wish, not a failure
        else:
            message = failure.getErrorMessage()
        stats = self.crawler.stats
        stats.inc_value("loraforge/fetch_errors")
        if stats.get_value("loraforge/first_error") is None:
            stats.set_value("loraforge/first_error",
                            f"{failure.request.url}: {message}")
        self.logger.warning("could not fetch %s: %s", failure.request.url, message)
