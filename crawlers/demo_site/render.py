"""Render the bundled MedQuAD documents as a small, realistic website held in memory."""

from __future__ import annotations

import json
from dataclasses import dataclass
from html import escape
from pathlib import Path
from string import Template

from crawlers.demo_site.medquad import Block, Document, load_documents

TEMPLATE = Template((Path(__file__).resolve().parent / "templates" / "layout.html").read_text())
COLLECTION_TITLES = {"seniorhealth": "Senior Health", "cdc": "Disease Control",
                     "niddk": "Digestive and Kidney Diseases"}
PRIVATE_PATH = "/private/staff-notes.html"
# Real sites mark up QA pages in several ways; the demo rotates through three of them.
LAYOUTS = ("headings", "faq-jsonld", "dl")
INDEX_PAGE_SIZE = 20

# Sentences of the page chrome; none may end up in extracted text.
BOILERPLATE = (
    "We use cookies to understand how visitors use this site.",
    "Accept all cookies",
    "Healthy Living Demo Library",
    "Trusted answers to everyday health questions",
    "Related links",
    "Sign up for our monthly newsletter for the latest health tips.",
    "Content adapted from MedQuAD (CC BY 4.0).",
    "Privacy policy",
    "On this page",
    "Original source:",
)


@dataclass(frozen=True)
class Page:
    content_type: str
    body: bytes
    status: int = 200  # tests serve failing pages too


def select_documents(per_collection: int | None = None) -> list[Document]:
    """All bundled documents, or the first N of each collection (small sites for fast tests)."""
    docs = load_documents()
    if per_collection is None:
        return list(docs)
    chosen: list[Document] = []
    for collection in COLLECTION_TITLES:
        chosen.extend([d for d in docs if d.collection == collection][:per_collection])
    return chosen


def _block_html(block: Block) -> str:
    if isinstance(block, list):
        items = "".join(f"<li>{escape(item)}</li>" for item in block)
        return f"<ul>{items}</ul>"
    return f"<p>{escape(block)}</p>"


def _layout(title: str, canonical: str, body: str, *, breadcrumbs: str,
            related: list[tuple[str, str]] = (), article_class: str = "page") -> bytes:
    links = "\n".join(f'        <li><a href="{escape(href)}">{escape(text)}</a></li>'
                      for href, text in related)
    html = TEMPLATE.substitute(
        title=escape(title), canonical=escape(canonical), body=body, breadcrumbs=breadcrumbs,
        related=links or "        <li><a href='/'>Home</a></li>", article_class=article_class,
    )
    return html.encode("utf-8")


def layout_of(index: int) -> str:
    """The layout of the index-th document of the site."""
    return LAYOUTS[index % len(LAYOUTS)]


def _answer_html(qa) -> str:
    return "\n".join(_block_html(b) for b in qa.answer_blocks)


def _headings_body(doc: Document) -> str:
    toc = "".join(f'<li><a href="#q{i}">{escape(qa.question)}</a></li>'
                  for i, qa in enumerate(doc.qa_pairs, 1))
    sections = "\n".join(
        f'<section class="qa" id="q{i}">\n<h2 data-qtype="{escape(qa.qtype)}">{escape(qa.question)}'
        f"</h2>\n{_answer_html(qa)}\n</section>"
        for i, qa in enumerate(doc.qa_pairs, 1)
    )
    return (f'<nav class="toc" aria-label="On this page"><p>On this page</p><ul>{toc}</ul></nav>\n'
            f"{sections}")


def _dl_body(doc: Document) -> str:
    items = "\n".join(f'<dt data-qtype="{escape(qa.qtype)}">{escape(qa.question)}</dt>\n'
                      f"<dd>{_answer_html(qa)}</dd>" for qa in doc.qa_pairs)
    return f'<h2>Questions and answers</h2>\n<dl class="faq">\n{items}\n</dl>'


def _faq_body(doc: Document) -> str:
    # Accordions show the answers; the questions live in <summary>, which no extractor reads as
    # a heading, so only the JSON-LD says which text is a question.
    return "\n".join(f'<details class="faq-item"><summary>{escape(qa.question)}</summary>\n'
                     f"{_answer_html(qa)}</details>" for qa in doc.qa_pairs)


def _faq_jsonld(doc: Document) -> str:
    data = {
        "@context": "https://schema.org", "@type": "FAQPage", "name": doc.focus,
        "mainEntity": [{"@type": "Question", "name": qa.question, "additionalType": qa.qtype,
                        "acceptedAnswer": {"@type": "Answer", "text": _answer_html(qa)}}
                       for qa in doc.qa_pairs],
    }
    # "</" inside a script would end it early; JSON allows the escaped slash.
    text = json.dumps(data, ensure_ascii=False).replace("</", "<\\/")
    return f'<script type="application/ld+json">{text}</script>'


def _document_page(doc: Document, base_url: str, related: list[Document], layout: str) -> bytes:
    main = {"headings": _headings_body, "dl": _dl_body, "faq-jsonld": _faq_body}[layout](doc)
    body = (
        f"<h1>{escape(doc.focus)}</h1>\n{main}\n"
        f'<footer class="article-meta"><p>Original source: <a href="{escape(doc.original_url)}">'
        f"{escape(doc.original_url)}</a></p></footer>"
    )
    if layout == "faq-jsonld":
        body = _faq_jsonld(doc) + "\n" + body
    title = COLLECTION_TITLES[doc.collection]
    crumbs = f'<a href="/">Home</a> &rsaquo; <a href="/{doc.collection}/">{title}</a>'
    # Tracking parameters make several URLs for one page: the canonical link says which is real.
    links = [(f"{d.path}?utm_source=related&utm_medium=aside", d.focus) for d in related]
    return _layout(doc.focus, base_url + doc.path, body, breadcrumbs=crumbs, related=links,
                   article_class=f"qa-article layout-{layout}")


def _index_page(title: str, canonical: str, entries: list[tuple[str, str]], intro: str,
                pager: str = "") -> bytes:
    items = "\n".join(f'<li><a href="{escape(href)}">{escape(text)}</a></li>'
                      for href, text in entries)
    body = (f"<h1>{escape(title)}</h1>\n<p>{escape(intro)}</p>\n<ul class='topics'>\n{items}\n"
            f"</ul>\n{pager}")
    return _layout(title, canonical, body, breadcrumbs='<a href="/">Home</a>')


def _page_path(collection: str, number: int) -> str:
    return f"/{collection}/" if number == 1 else f"/{collection}/page/{number}/"


def _collection_pages(collection: str, title: str, docs: list[Document], base_url: str,
                      page_size: int) -> dict[str, bytes]:
    """The collection's topic list, ``page_size`` topics a page, linked by prev/next."""
    entries = [(d.path, d.focus) for d in docs]
    count = max(1, -(-len(entries) // page_size))
    pages = {}
    for number in range(1, count + 1):
        links = []
        if number > 1:
            links.append(f'<a rel="prev" href="{_page_path(collection, number - 1)}">Previous</a>')
        if number < count:
            links.append(f'<a rel="next" href="{_page_path(collection, number + 1)}">Next</a>')
        pager = f'<nav class="pagination" aria-label="Pages">{" ".join(links)}</nav>'
        path = _page_path(collection, number)
        pages[path] = _index_page(
            f"{title} topics" + (f" (page {number} of {count})" if count > 1 else ""),
            base_url + path, entries[(number - 1) * page_size:number * page_size],
            f"{len(entries)} topics, each answering common questions.", pager)
    return pages


def _private_page(base_url: str) -> bytes:
    body = (
        "<h1>Staff notes (internal)</h1>\n<section class='qa'><h2>What is the draft schedule?</h2>"
        "<p>Internal draft: not for publication or crawling.</p></section>"
    )
    return _layout("Staff notes", base_url + PRIVATE_PATH, body, breadcrumbs="Staff",
                   article_class="qa-article")


def _about_page(base_url: str) -> bytes:
    body = (
        "<h1>About the Healthy Living Demo Library</h1>\n"
        "<p>This demo site republishes question-answer pairs from the MedQuAD dataset "
        "(Ben Abacha and Demner-Fushman, BMC Bioinformatics 2019, CC BY 4.0) so that crawlers "
        "can be tested on a realistic layout.</p>"
    )
    return _layout("About us", base_url + "/about.html", body, breadcrumbs='<a href="/">Home</a>')


def _sitemap(urls: list[str]) -> bytes:
    entries = "\n".join(f"  <url><loc>{escape(u)}</loc></url>" for u in urls)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">\n'
        f"{entries}\n</urlset>\n"
    ).encode()


def build_site(base_url: str, per_collection: int | None = None,
               index_page_size: int = INDEX_PAGE_SIZE) -> dict[str, Page]:
    """Every path of the site (paginated indexes, one page per document, robots.txt, sitemap)."""
    base_url = base_url.rstrip("/")
    docs = select_documents(per_collection)
    html = "text/html; charset=utf-8"
    pages: dict[str, Page] = {}
    for i, doc in enumerate(docs):
        related = [docs[(i + k) % len(docs)] for k in (1, 2, 3) if len(docs) > k]
        pages[doc.path] = Page(html, _document_page(doc, base_url, related, layout_of(i)))
    for collection, title in COLLECTION_TITLES.items():
        listed = [d for d in docs if d.collection == collection]
        for path, body in _collection_pages(collection, title, listed, base_url,
                                            index_page_size).items():
            pages[path] = Page(html, body)
    pages["/"] = Page(html, _index_page(
        "Health topics A to Z", base_url + "/",
        [(f"/{c}/", t) for c, t in COLLECTION_TITLES.items()]
        + [("/about.html", "About us"), (PRIVATE_PATH, "Staff area")],
        "Browse our collections of questions and answers."))
    pages["/about.html"] = Page(html, _about_page(base_url))
    pages[PRIVATE_PATH] = Page(html, _private_page(base_url))
    # The private page is listed too, as careless sites do: robots.txt alone must keep it out.
    pages["/sitemap.xml"] = Page("application/xml", _sitemap([base_url + p for p in pages]))
    pages["/robots.txt"] = Page("text/plain", (
        f"User-agent: *\nDisallow: /private/\n\nSitemap: {base_url}/sitemap.xml\n").encode())
    pages["/static/site.css"] = Page("text/css", b"body { font-family: sans-serif; }\n")
    return pages
