"""The ``articles`` spider: news, blog, encyclopedia and health-portal pages into the store.

Seeds are start URLs and/or sitemaps (comma separated). ``allow``/``deny`` are comma-separated
regular expressions over URLs: a page is fetched and stored only when it matches an ``allow``
pattern (if any) and no ``deny`` one; start URLs are always fetched, for their links. Links are
followed up to ``max_depth`` hops from a start URL. The topic is one label (``topic``) or a map
from URL pattern to topic (``topic_map="/health/=health,/history/=history"`` or JSON); the first
matching pattern wins, and ``topic`` labels the rest.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import scrapy
from scrapy.http import Response

from crawlers.items import ArticleItem
from crawlers.page_work import article_item
from crawlers.spiders.base import StoreSpider, split_list


def parse_topic_map(value: str | dict[str, str] | None) -> list[tuple[re.Pattern[str], str]]:
    """``"pat=topic,pat2=topic2"`` or a JSON object, as compiled (pattern, topic) pairs."""
    if not value:
        return []
    if isinstance(value, str) and value.lstrip().startswith("{"):
        value = json.loads(value)
    pairs = value.items() if isinstance(value, dict) else [
        item.rsplit("=", 1) for item in split_list(value)]
    result = []
    for pair in pairs:
        if len(pair) != 2 or not pair[0].strip() or not pair[1].strip():
            raise ValueError(f"topic_map entries are PATTERN=TOPIC, got {'='.join(pair)!r}")
        result.append((re.compile(pair[0].strip()), pair[1].strip()))
    return result


class ArticlesSpider(StoreSpider):
    name = "articles"

    def __init__(self, start_urls: str | None = None, sitemap_urls: str | None = None,
                 allowed_domains: str | None = None, allow: str | None = None,
                 deny: str | None = None, max_pages: str | int | None = None,
                 max_depth: str | int | None = None, topic: str | None = None,
                 topic_map: str | None = None, **kwargs: Any):
        self.allow = [re.compile(p) for p in split_list(allow)]
        self.deny = [re.compile(p) for p in split_list(deny)]
        super().__init__(split_list(start_urls), split_list(sitemap_urls), max_pages,
                         split_list(allowed_domains) or None, **kwargs)
        self.max_depth = int(max_depth) if max_depth not in (None, "") else None
        self.topic = topic
        self.topic_map = parse_topic_map(topic_map)
        self.max_link_density = 0.5
        self.crawl_args = {k: v for k, v in {
            "start_url": self.seed_urls[0] if self.seed_urls else None,
            "sitemap_url": self.sitemap_urls[0] if self.sitemap_urls else None,
            "start_urls": start_urls, "sitemap_urls": sitemap_urls, "allow": allow, "deny": deny,
            "allowed_domains": allowed_domains, "max_pages": self.max_pages,
            "max_depth": self.max_depth, "topic": topic, "topic_map": topic_map,
        }.items() if v is not None}

    @classmethod
    def from_crawler(cls, crawler, *args: Any, **kwargs: Any) -> ArticlesSpider:
        spider = super().from_crawler(crawler, *args, **kwargs)
        spider.max_link_density = crawler.settings.getfloat("ARTICLES_MAX_LINK_DENSITY", 0.5)
        return spider

    def wanted(self, url: str) -> bool:
        if any(p.search(url) for p in self.deny):
            return False
        return not self.allow or any(p.search(url) for p in self.allow)

    def topic_for(self, url: str) -> str | None:
        return next((topic for pattern, topic in self.topic_map if pattern.search(url)),
                    self.topic)

    def follow_links(self, response: Response) -> Iterator[scrapy.Request]:
        if self.max_depth is not None and response.meta.get("depth", 0) >= self.max_depth:
            return
        for request in super().follow_links(response):
            if self.wanted(request.url):
                yield request

    async def parse(self, response: Response) -> AsyncIterator[ArticleItem | scrapy.Request]:
        html = self.page_html(response)
        if html is None:
            return
        if self.wanted(response.url):
            item = await self.workers.run(article_item, html, response.url,
                                          self.max_link_density, self.ahead)
            if isinstance(item, str):
                self.drop_page(response.url, item)
            else:
                item.topic = self.topic_for(item.url)
                yield item
        if self.seed_urls:
            for request in self.follow_links(response):
                yield request
