"""The ``qa`` spider: question/answer pages (FAQ and health sites) into QA pairs.

It reads a sitemap (``sitemap_url``) or follows same-site links from ``start_url``, and yields
one ``QAPageItem`` per page that has at least one pair: FAQPage/QAPage JSON-LD, ``<dl>`` lists or
h2/h3 heading sections (``crawlers.extract``). Index pages yield nothing but their links.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import scrapy
from scrapy.http import Response

from crawlers.items import QAPageItem
from crawlers.page_work import qa_item
from crawlers.spiders.base import StoreSpider


class QASpider(StoreSpider):
    name = "qa"

    def __init__(self, start_url: str | None = None, sitemap_url: str | None = None,
                 topic: str = "health", max_pages: str | int | None = None,
                 focus_area: str | None = None, **kwargs: Any):
        if not (start_url or sitemap_url):
            raise ValueError("the qa spider needs -a start_url=URL or -a sitemap_url=URL")
        super().__init__([start_url] if start_url else [], [sitemap_url] if sitemap_url else [],
                         max_pages, **kwargs)
        self.start_url, self.sitemap_url, self.topic = start_url, sitemap_url, topic
        self.focus_area = focus_area
        self.crawl_args = {k: v for k, v in {
            "start_url": start_url, "sitemap_url": sitemap_url, "topic": topic,
            "max_pages": self.max_pages, "focus_area": focus_area}.items() if v is not None}

    async def parse(self, response: Response) -> AsyncIterator[QAPageItem | scrapy.Request]:
        html = self.page_html(response)
        if html is None:
            return
        try:
            item = await self.workers.run(qa_item, html, response.url, self.focus_area,
                                          self.topic, self.ahead)
        except ValueError as exc:
            self.drop_page(response.url, f"unparseable html ({exc})")
            return
        if item is not None:
            yield item
        if self.start_url:
            for request in self.follow_links(response):
                yield request
