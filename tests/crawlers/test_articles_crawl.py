"""The ``articles`` spider on a small news site served over loopback, into a real store."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select

from crawlers.demo_site import Page, serve
from crawlers.run import run_crawl
from crawlers.spiders.articles import parse_topic_map
from registry import db
from registry.article_store import get_crawl_run
from registry.models import Article

HTML = "text/html; charset=utf-8"
CHROME = ("Accept all cookies", "Daily Chronicle home", "Related stories", "Advertisement",
          "Leave a comment", "Great read, thanks", "Subscribe to the newsletter",
          "All rights reserved")


def _paragraphs(topic: str) -> str:
    return "\n".join(
        f"<p>{topic} paragraph {i}: researchers described how the events unfolded over many "
        f"months, which sources they consulted, and why the findings matter to readers who "
        f"follow {topic.lower()} closely and want the full background of the story.</p>"
        for i in range(1, 5))


def _article(title: str, topic: str, head: str = "") -> bytes:
    return f"""<!DOCTYPE html><html lang="en"><head><title>{title} | Daily Chronicle</title>
{head}</head><body>
<div class="cookie-banner"><p>We use cookies.</p><button>Accept all cookies</button></div>
<header><a href="/news/">Daily Chronicle home</a><nav><a href="/news/">News</a>
<a href="/private/drafts.html">Drafts</a></nav></header>
<main><article><h1>{title}</h1>{_paragraphs(topic)}</article>
<section id="comments" class="comments"><h2>Leave a comment</h2>
<div class="comment"><p>Great read, thanks!</p></div></section>
<aside class="related"><h2>Related stories</h2><ul><li><a href="/news/">More news</a></li></ul>
<div class="ad">Advertisement</div></aside></main>
<footer><p>Subscribe to the newsletter.</p><p>All rights reserved.</p></footer>
</body></html>""".encode()


def _site() -> dict[str, Page]:
    ld = {"@context": "https://schema.org", "@type": "NewsArticle",
          "headline": "Flu season peaks early", "author": {"@type": "Person", "name": "Ada Byron"},
          "datePublished": "2024-03-05T09:30:00+00:00"}
    index = "".join(f'<li><a href="{p}">{p}</a></li>' for p in (
        "/news/health/flu-season.html", "/news/history/plague.html", "/news/tech/robots.html",
        "/news/ads/sponsored.html", "/news/archive/"))
    return {
        "/news/": Page(HTML, f"<html><body><main><h1>News</h1><ul>{index}</ul></main></body>"
                             f"</html>".encode()),
        "/news/archive/": Page(HTML, b"<html><body><main><h1>Archive</h1><ul><li>"
                                     b"<a href='/news/history/old-map.html'>Old map</a></li></ul>"
                                     b"</main></body></html>"),
        "/news/health/flu-season.html": Page(HTML, _article(
            "Flu season peaks early", "Health",
            f'<script type="application/ld+json">{json.dumps(ld)}</script>')),
        "/news/history/plague.html": Page(HTML, _article(
            "The plague of Justinian", "History",
            '<meta name="author" content="Procopius Scribe">'
            '<meta property="article:published_time" content="2023-11-20">')),
        "/news/history/old-map.html": Page(HTML, _article("An old map found", "History")),
        "/news/tech/robots.html": Page(HTML, _article("Robots learn to walk", "Technology")),
        "/news/ads/sponsored.html": Page(HTML, _article("Buy now", "Sponsored")),
        "/private/drafts.html": Page(HTML, _article("Draft", "Secret")),
    }


def _articles() -> dict[str, Article]:
    with db.session_scope() as session:
        rows = list(session.scalars(select(Article)))
        session.expunge_all()
    return {a.url.rsplit("/", 1)[-1]: a for a in rows}


def test_article_crawl_extracts_text_metadata_and_topics_without_boilerplate(home: Path) -> None:
    log: list[str] = []
    with serve(per_collection=0, extra_pages=_site(), request_log=log) as base_url:
        run_id = run_crawl("articles", {
            "start_urls": f"{base_url}/news/", "deny": "/ads/", "topic": "technology",
            "topic_map": "/health/=health,/history/=history"})
    assert "/robots.txt" in log and not [p for p in log if p.startswith(("/private", "/news/ads"))]
    articles = _articles()
    assert set(articles) == {"flu-season.html", "plague.html", "old-map.html", "robots.html"}
    flu, plague, robots = (articles[k] for k in ("flu-season.html", "plague.html", "robots.html"))
    assert (flu.title, flu.author, flu.topic) == ("Flu season peaks early", "Ada Byron", "health")
    assert flu.published is not None and flu.published.date().isoformat() == "2024-03-05"
    assert (plague.author, plague.topic) == ("Procopius Scribe", "history")
    assert plague.published is not None and plague.published.year == 2023
    assert robots.topic == "technology" and robots.language == "en"
    for article in articles.values():
        assert "paragraph 4: researchers" in article.text
        assert not [c for c in CHROME if c in article.text], article.url
    run = get_crawl_run(run_id)
    assert run.status == "finished" and run.items_stored == 4


def test_allow_patterns_and_max_depth_limit_what_is_fetched(home: Path) -> None:
    log: list[str] = []
    with serve(per_collection=0, extra_pages=_site(), request_log=log) as base_url:
        run_crawl("articles", {"start_urls": f"{base_url}/news/", "allow": "/history/",
                               "max_depth": "1", "topic": "history"})
    # depth 1: the index's own links; old-map.html is two hops away, behind the archive page.
    assert set(_articles()) == {"plague.html"}
    assert "/news/archive/" not in log and "/news/tech/robots.html" not in log


def test_topic_map_accepts_pairs_or_json() -> None:
    pairs = [(p.pattern, t) for p, t in parse_topic_map("/health/=health,/h(ist)?/=history")]
    assert pairs == [("/health/", "health"), ("/h(ist)?/", "history")]
    assert [t for _, t in parse_topic_map('{"/edu/": "education"}')] == ["education"]
