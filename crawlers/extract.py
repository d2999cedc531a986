"""Find a page's content region and split it into heading-question sections.

Selecting the region (``<article>``, ``<main>``, ``[role=main]``) and dropping the few chrome
elements that sites nest inside it is all the boilerplate removal we do; no scoring heuristics.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lxml import html as lxml_html

from crawlers.text import join_blocks

CONTENT_REGIONS = ("//main//article", "//article", "//main", "//*[@role='main']", "//body")
CHROME = ("nav", "header", "footer", "aside", "script", "style", "noscript", "form", "button",
          "template")
QUESTION_TAGS = {"h2", "h3"}
HEADING_TAGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
BLOCK_TAGS = HEADING_TAGS | {"p", "ul", "ol", "pre", "blockquote", "dl", "table"}


@dataclass
class Section:
    question: str
    qtype: str | None = None
    blocks: list[str | list[str]] = field(default_factory=list)

    @property
    def answer(self) -> str:
        return join_blocks(self.blocks)


@dataclass
class ExtractedPage:
    focus_area: str
    text: str
    sections: list[Section]
    language: str | None = None
    canonical_url: str | None = None


def _text(element) -> str:
    return " ".join("".join(element.itertext()).split())


def _content_region(root):
    for xpath in CONTENT_REGIONS:
        found = root.xpath(xpath)
        if found:
            return found[0]
    return root


def _drop_chrome(region) -> None:
    for element in region.xpath(" | ".join(f".//{tag}" for tag in CHROME)):
        element.drop_tree()
    for element in region.xpath(".//*[contains(@class, 'cookie') or contains(@id, 'cookie')]"):
        element.drop_tree()


def _inside_block(element, region) -> bool:
    for ancestor in element.iterancestors():
        if ancestor is region:
            return False
        if ancestor.tag in BLOCK_TAGS or ancestor.tag == "li":
            return True
    return False


def _blocks(region) -> list:
    """Top-level blocks in document order: a heading, paragraph or list not inside another block."""
    return [el for el in region.iter() if isinstance(el.tag, str) and el.tag in BLOCK_TAGS
            and not _inside_block(el, region)]


def _block_value(element) -> str | list[str]:
    if element.tag in ("ul", "ol"):
        return [_text(li) for li in element.xpath("./li")]
    return _text(element)


def extract_page(body: str | bytes, base_url: str | None = None) -> ExtractedPage:
    """The h1 as focus area; each h2/h3 with the paragraphs and lists up to the next heading."""
    root = lxml_html.fromstring(body, base_url=base_url)
    canonical = root.xpath("//link[@rel='canonical']/@href")
    language = root.get("lang")
    region = _content_region(root)
    _drop_chrome(region)
    focus, sections, texts = "", [], []
    current: Section | None = None
    for element in _blocks(region):
        value = _block_value(element)
        texts.append(join_blocks([value]))
        if element.tag == "h1" and not focus:
            focus, current = _text(element), None
        elif element.tag in QUESTION_TAGS:
            current = Section(question=_text(element), qtype=element.get("data-qtype"))
            sections.append(current)
        elif element.tag in HEADING_TAGS:
            current = None  # an h4-h6 or a second h1 ends the section it follows
        elif current is not None:
            current.blocks.append(value)
    if not focus and root.find(".//title") is not None:
        focus = _text(root.find(".//title"))
    return ExtractedPage(
        focus_area=focus,
        text="\n\n".join(t for t in texts if t),
        sections=[s for s in sections if s.question and s.answer],
        language=language,
        canonical_url=canonical[0].strip() if canonical else None,
    )
