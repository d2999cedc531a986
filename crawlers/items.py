"""What the spiders yield: one item per page that carries question/answer sections."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class QAPairItem:
    question: str
    answer: str
    qtype: str | None = None


@dataclass
class QAPageItem:
    url: str  # canonical URL when the page declares one
    focus_area: str  # the page's h1: what every question on it is about
    text: str  # the main content region's text, boilerplate excluded
    qa_pairs: list[QAPairItem] = field(default_factory=list)
    topic: str = "health"
    language: str | None = None
    fetched_url: str | None = None

    @property
    def title(self) -> str:
        return self.focus_area
