"""What the spiders yield: one item per page that carries question/answer sections."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from crawlers.text import CleanSteps, clean_line, clean_text


@dataclass
class QAPairItem:
    question: str
    answer: str
    qtype: str | None = None
    focus_area: str | None = None  # only where it differs from the page's (imported rows)
    content_hash: str | None = None  # of the cleaned pair, when a page worker computed it


@dataclass
class QAPageItem:
    url: str  # canonical URL when the page declares one
    focus_area: str  # the page's h1: what every question on it is about
    text: str  # the main content region's text, boilerplate excluded
    qa_pairs: list[QAPairItem] = field(default_factory=list)
    topic: str = "health"
    language: str | None = None
    fetched_url: str | None = None
    source: str | None = None  # the pairs' source column when it is not the URL (imports)
    # Pipeline work a page worker did ahead (crawlers/page_work.py): the cleaning steps applied,
    # then the content hash and near-duplicate signature of the cleaned page.
    cleaned_with: CleanSteps | None = None
    content_hash: str | None = None
    signature: Any = None

    @property
    def title(self) -> str:
        return self.focus_area


@dataclass
class ArticleItem:
    """A page of prose (news, blog, encyclopedia, health portal): no QA pairs of its own."""

    url: str  # canonical URL when the page declares one
    title: str
    text: str  # the main text, boilerplate excluded
    topic: str | None = None
    language: str | None = None
    author: str | None = None
    published: str | None = None  # ISO 8601 date or datetime, as the page gives it
    fetched_url: str | None = None
    source: str | None = None
    qa_pairs: list[QAPairItem] = field(default_factory=list)
    cleaned_with: CleanSteps | None = None  # as on QAPageItem
    content_hash: str | None = None
    signature: Any = None

    # The pipelines clean and hash "focus_area" on every item; an article's is its title.
    @property
    def focus_area(self) -> str:
        return self.title

    @focus_area.setter
    def focus_area(self, value: str) -> None:
        self.title = value


def clean_item(item: QAPageItem | ArticleItem, steps: CleanSteps) -> QAPageItem | ArticleItem:
    """Clean the item's fields in place, dropping pairs left empty; ``CleanPipeline`` decides
    what an empty item means."""
    item.focus_area = clean_line(item.focus_area, steps)
    item.text = clean_text(item.text, steps)
    pairs = [QAPairItem(clean_line(qa.question, steps), clean_text(qa.answer, steps),
                        qa.qtype or None, qa.focus_area and clean_line(qa.focus_area, steps))
             for qa in item.qa_pairs]
    item.qa_pairs = [qa for qa in pairs if qa.question and qa.answer]
    # What was computed from the text before is stale now.
    item.cleaned_with, item.content_hash, item.signature = steps, None, None
    return item
