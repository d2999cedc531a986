"""What a page worker does with a fetched page: extract it, then do the item pipelines' CPU
work where the page already is.

The crawl's own thread is what limits a fast crawl (``benchmarks/crawl.py``), so a worker
(``crawlers.offload.PageWorkers``) also cleans the item with the crawl's ``CLEAN_*`` steps and
computes its content hashes and near-duplicate signature, when those pipelines are on. The
pipelines still run:
``CleanPipeline`` skips an item cleaned with its own steps, ``DeduplicatePipeline`` uses the
hashes and signature it finds, and both do the work themselves for items without them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urljoin

from crawlers.article_extract import extract_article
from crawlers.extract import extract_page
from crawlers.items import ArticleItem, QAPageItem, QAPairItem, clean_item
from crawlers.near_duplicates import signature
from crawlers.text import CleanSteps
from registry.content_hash import article_content_hash, qa_content_hash

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

Item = QAPageItem | ArticleItem


def _path(component: object) -> str:
    return component if isinstance(component, str) else \
        f"{component.__module__}.{component.__qualname__}"  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Ahead:
    """The pipeline work a worker does ahead of the pipelines, read from the crawl's settings."""

    clean: CleanSteps | None = None  # None: CleanPipeline is off, nothing is cleaned ahead
    signature: bool = False  # the near-duplicate check is on

    @classmethod
    def from_settings(cls, settings: BaseSettings) -> Ahead:
        # Imported here, not above: a worker process imports this module to run the functions
        # below, and Scrapy and the store (SQLAlchemy) took it over a second of a core to load,
        # a second the crawl's own server and writer wait for at the start of every crawl.
        from scrapy.utils.conf import build_component_list

        from crawlers.pipelines import CleanPipeline, DeduplicatePipeline

        enabled = {_path(c) for c in build_component_list(settings.getwithbase("ITEM_PIPELINES"))}
        clean_on = _path(CleanPipeline) in enabled
        near_on = (_path(DeduplicatePipeline) in enabled
                   and settings.getfloat("DEDUPE_NEAR_THRESHOLD", 0.0) > 0)
        # The signature is of the cleaned text, so it is computed ahead only after cleaning.
        return cls(CleanSteps.from_settings(settings) if clean_on else None, near_on and clean_on)

    def apply(self, item: Item) -> Item:
        if self.clean is None:
            return item
        clean_item(item, self.clean)
        item.content_hash = article_content_hash(item.focus_area, item.text)
        for qa in item.qa_pairs:
            qa.content_hash = qa_content_hash(qa.question, qa.answer)
        if self.signature:
            item.signature = signature(item.text)
        return item


def qa_item(html: str, url: str, focus_area: str | None, topic: str,
            ahead: Ahead) -> QAPageItem | None:
    """The page's QA item, or None when it has no question/answer section (an index page).
    Unparseable HTML raises ``ValueError``."""
    page = extract_page(html, url)
    if not page.sections:
        return None
    return ahead.apply(QAPageItem(
        url=urljoin(url, page.canonical_url or url), focus_area=focus_area or page.focus_area,
        text=page.text, qa_pairs=[QAPairItem(s.question, s.answer, s.qtype)
                                  for s in page.sections],
        topic=topic, language=page.language, fetched_url=url))


def article_item(html: str, url: str, max_link_density: float,
                 ahead: Ahead) -> ArticleItem | str:
    """The page's article item (its topic left to the spider), or why it is not an article."""
    article = extract_article(html, url, max_link_density)
    if isinstance(article, str):
        return article
    return ahead.apply(ArticleItem(
        url=urljoin(url, article.canonical_url or url), title=article.title, text=article.text,
        language=article.language, author=article.author, published=article.published,
        fetched_url=url))
