"""Main text and metadata of an article page: trafilatura first, the page's JSON-LD and meta tags
where it finds nothing. Trafilatura removes navigation, footers, related links, ads, cookie
banners and comments; this module only chooses between its answer and what the site declares."""

from __future__ import annotations

from dataclasses import dataclass

from lxml import html as lxml_html

from crawlers.extract import jsonld_nodes, jsonld_types

ARTICLE_TYPES = {"Article", "NewsArticle", "BlogPosting", "ScholarlyArticle", "MedicalWebPage",
                 "Report", "TechArticle", "MedicalScholarlyArticle"}
# Below RECHECK_WORDS the precise extraction is checked against the default one, which wins when
# it finds over WIDER_FACTOR times the words. A page whose main text is under ARTICLE_WORDS and
# whose body is mostly links is an index page; a longer text is an article whatever its page.
RECHECK_WORDS = 250
WIDER_FACTOR = 4
ARTICLE_WORDS = 50


@dataclass(frozen=True)
class ExtractedArticle:
    title: str
    text: str
    author: str | None = None
    published: str | None = None
    language: str | None = None
    canonical_url: str | None = None


def _one_line(value) -> str | None:
    if isinstance(value, list):
        value = ", ".join(filter(None, (_one_line(v) for v in value)))
    if isinstance(value, dict):
        value = value.get("name")
    text = " ".join(str(value).split()) if value else ""
    return text or None


def _meta(root, *names: str) -> str | None:
    for name in names:
        found = root.xpath(f"//meta[@property='{name}' or @name='{name}']/@content")
        if found and found[0].strip():
            return found[0].strip()
    return None


def _declared(root) -> dict[str, str | None]:
    """What the site says about the article in JSON-LD, else in meta tags."""
    node = next((n for n in jsonld_nodes(root) if jsonld_types(n) & ARTICLE_TYPES), {})
    title = root.findtext(".//title")
    return {
        "title": _one_line(node.get("headline") or node.get("name"))
        or _meta(root, "og:title", "twitter:title") or _one_line(title),
        "author": _one_line(node.get("author")) or _meta(root, "author", "article:author"),
        "published": _one_line(node.get("datePublished"))
        or _meta(root, "article:published_time", "date", "dc.date"),
        "language": _one_line(node.get("inLanguage")) or root.get("lang"),
        "body": node.get("articleBody") if isinstance(node.get("articleBody"), str) else None,
        "description": _meta(root, "og:description", "description"),
    }


def _words(text: str | None) -> int:
    return len(text.split()) if text else 0


def link_density(root) -> float:
    """Share of the main region's text that sits in links: high on index and tag pages."""
    region = next(iter(root.xpath("//main | //article | //body")), root)
    total = len("".join(region.itertext()).split())
    linked = sum(len("".join(a.itertext()).split()) for a in region.iter("a"))
    return linked / total if total else 1.0


def linked_share(text: str, root) -> float:
    """Share of the extracted text's words on lines that are a link's whole text: a list of
    headlines extracted from an index page is all links, an article's paragraphs are not."""
    anchors = {" ".join("".join(a.itertext()).split()) for a in root.iter("a")}
    anchors.discard("")
    lines = [" ".join(line.removeprefix("- ").split()) for line in text.splitlines()]
    total = sum(_words(line) for line in lines)
    linked = sum(_words(line) for line in lines if line in anchors)
    return linked / total if total else 0.0


def _trafilatura(html: str, url: str | None, precise: bool):
    import trafilatura  # a second to import: spiders that do not extract articles skip it

    return trafilatura.bare_extraction(
        html, url=url, with_metadata=True, include_comments=False, include_tables=True,
        favor_precision=precise, deduplicate=False)


def extract_article(html: str, url: str | None = None,
                    max_link_density: float = 0.5) -> ExtractedArticle | str:
    """The article's title and main text with metadata, or why the page is not an article."""
    try:
        root = lxml_html.fromstring(html)
    except (ValueError, lxml_html.etree.ParserError) as exc:
        return f"unparseable html ({exc})"
    # Trafilatura's precision setting scores best on real news pages (see
    # benchmarks/article_extraction.py), but now and then keeps a fragment of a long article:
    # when the default setting finds several times more, the fragment was a miss.
    found = _trafilatura(html, url, precise=True)
    text = found.text if found is not None else ""
    if _words(text) < RECHECK_WORDS:
        wider = _trafilatura(html, url, precise=False)
        if wider is not None and _words(wider.text) > WIDER_FACTOR * _words(text):
            found, text = wider, wider.text
    if text and (linked_share(text, root) > max_link_density or (
            _words(text) < ARTICLE_WORDS and link_density(root) > max_link_density)):
        return "index page (mostly links)"
    declared = _declared(root)
    text = text or declared["body"] or declared["description"]
    if not text:
        return "no main text"
    canonical = root.xpath("//link[@rel='canonical']/@href")
    return ExtractedArticle(
        title=declared["title"] or (found.title if found else None) or "",
        text=text,
        # The site's own statement beats trafilatura's guesses (it may take a © year for a date).
        author=declared["author"] or (found.author if found else None),
        published=declared["published"] or (found.date if found else None),
        language=declared["language"] or (found.language if found else None),
        canonical_url=canonical[0].strip() if canonical else None,
    )
