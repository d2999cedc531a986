"""Find a page's question/answer pairs: schema.org JSON-LD, ``<dl>`` lists or heading sections.

Selecting the region (``<article>``, ``<main>``, ``[role=main]``) and dropping the few chrome
elements that sites nest inside it is all the boilerplate removal we do; no scoring heuristics.
A page's FAQPage/QAPage JSON-LD, when it has one, is what the site says its pairs are, so it wins
over the markup.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from lxml import etree
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


def _unnest_headings(region) -> None:
    """Move a heading found inside another heading out, after it, as browsers do.

    libxml2 leaves ``<h1>Title<h2>Question?</h2>`` nested when the h1 is never closed.
    """
    nested = [el for el in region.iter(*HEADING_TAGS)
              if any(a.tag in HEADING_TAGS for a in el.iterancestors())]
    for inner in reversed(nested):  # reversed, so that siblings keep their order
        outer = [a for a in inner.iterancestors() if a.tag in HEADING_TAGS][-1]
        outer.addnext(inner)


def _inside_block(element, region) -> bool:
    for ancestor in element.iterancestors():
        if ancestor is region:
            return False
        if ancestor.tag in BLOCK_TAGS or ancestor.tag == "li":
            return True
    return False


def _blocks(region) -> list:
    """Top-level blocks in document order: a heading, paragraph or list not inside another block
    (nor inside a list item)."""
    if region.tag in BLOCK_TAGS:
        return [] if _inside_block(region, region) else [region]
    found: list = []
    # One walk that stops at each block and list item: checking every element's ancestors
    # was most of a page's extraction.
    stack = [iter(region)]
    while stack:
        for element in stack[-1]:
            tag = element.tag
            if not isinstance(tag, str) or tag == "li":
                continue
            if tag in BLOCK_TAGS:
                found.append(element)
            else:
                stack.append(iter(element))
                break
        else:
            stack.pop()
    return found


def _block_value(element) -> str | list[str]:
    if element.tag in ("ul", "ol"):
        return [_text(li) for li in element.xpath("./li")]
    if element.tag == "dl":  # a glossary inside an answer: one "term: definition" item each
        return [f"{s.question}: {s.answer}" for s in _dl_sections(element)]
    return _text(element)


def _fragment_blocks(fragment) -> list[str | list[str]]:
    """A fragment's paragraphs and lists; bare text between them counts as a paragraph."""
    blocks = [_block_value(el) for el in _blocks(fragment) if el.tag not in HEADING_TAGS]
    return blocks or [_text(fragment)]


def _dl_sections(dl) -> list[Section]:
    """Each ``<dt>`` is a question; the ``<dd>`` elements after it are its answer."""
    sections: list[Section] = []
    for child in dl:
        if child.tag == "dt":
            sections.append(Section(question=_text(child), qtype=child.get("data-qtype")))
        elif child.tag == "dd" and sections:
            sections[-1].blocks.extend(_fragment_blocks(child))
    return sections


def _html_blocks(markup: str) -> list[str | list[str]]:
    if "<" not in markup:
        return [markup]
    wrapper = lxml_html.fragment_fromstring(markup, create_parent="div")
    return _fragment_blocks(wrapper)


def jsonld_nodes(root) -> list[dict]:
    nodes: list[dict] = []
    for script in root.xpath("//script[@type='application/ld+json']"):
        try:
            data = json.loads(script.text or "")
        except ValueError:
            continue  # a broken JSON-LD block is the site's bug; the markup still counts
        stack = data if isinstance(data, list) else [data]
        while stack:
            node = stack.pop(0)
            if isinstance(node, dict):
                nodes.append(node)
                graph = node.get("@graph")
                stack.extend(graph if isinstance(graph, list) else [])
    return nodes


def jsonld_types(node: dict) -> set[str]:
    kind = node.get("@type", [])
    return set(kind if isinstance(kind, list) else [kind])


def _answer_text(answer) -> str | None:
    if isinstance(answer, list):
        answer = answer[0] if answer else None
    if isinstance(answer, dict):
        return answer.get("text")
    return answer if isinstance(answer, str) else None


def jsonld_sections(root) -> tuple[str | None, list[Section]]:
    """Pairs of schema.org ``FAQPage`` / ``QAPage`` JSON-LD, with the page's ``name`` if any."""
    for node in jsonld_nodes(root):
        if not jsonld_types(node) & {"FAQPage", "QAPage"}:
            continue
        questions = node.get("mainEntity") or []
        sections = []
        for q in questions if isinstance(questions, list) else [questions]:
            if not isinstance(q, dict):
                continue
            answer = _answer_text(q.get("acceptedAnswer")) or _answer_text(q.get("suggestedAnswer"))
            question = " ".join(str(q.get("name") or q.get("text") or "").split())
            if question and answer:
                sections.append(Section(question=question, qtype=q.get("additionalType"),
                                        blocks=_html_blocks(answer)))
        if sections:
            return node.get("name"), sections
    return None, []


def extract_page(body: str | bytes, base_url: str | None = None) -> ExtractedPage:
    """The page's pairs and its h1 as focus area.

    Pairs come from FAQPage/QAPage JSON-LD when the page has it; otherwise each h2/h3 with the
    paragraphs and lists up to the next heading, and each ``<dl>`` that is not inside a section's
    answer as one pair per ``<dt>``. Raises ``ValueError`` when the body is not HTML at all.
    """
    try:
        root = lxml_html.fromstring(body, base_url=base_url)
    except (etree.ParserError, ValueError) as exc:
        raise ValueError(f"not parseable as HTML: {exc}") from exc
    canonical = root.xpath("//link[@rel='canonical']/@href")
    language = root.get("lang")
    ld_name, ld_sections = jsonld_sections(root)
    region = _content_region(root)
    _drop_chrome(region)
    _unnest_headings(region)
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
        elif element.tag == "dl" and (current is None or not current.blocks):
            # A dl right under a heading ("Questions and answers") is the pairs, not an answer.
            if current is not None:
                sections.remove(current)
            sections.extend(_dl_sections(element))
            current = None
        elif current is not None:
            current.blocks.append(value)
    if not focus and root.find(".//title") is not None:
        focus = _text(root.find(".//title"))
    if ld_sections:
        # Accordion markup hides which text is a question; the JSON-LD's pairs are the content.
        sections = ld_sections
        focus = focus or " ".join(str(ld_name or "").split())
        texts = [focus] + [part for s in sections for part in (s.question, s.answer)]
    return ExtractedPage(
        focus_area=focus,
        text="\n\n".join(t for t in texts if t),
        sections=[s for s in sections if s.question and s.answer],
        language=language,
        canonical_url=canonical[0].strip() if canonical else None,
    )
