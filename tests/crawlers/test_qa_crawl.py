"""End-to-end crawls of the demo site: real Scrapy in a child process, real HTTP, real store."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import func, select

from crawlers.demo_site import BOILERPLATE, LAYOUTS, PRIVATE_PATH, ground_truth, serve
from crawlers.demo_site.render import COLLECTION_TITLES, Page
from crawlers.errors import CrawlError
from crawlers.run import run_crawl
from crawlers.text import collapse_whitespace
from registry import db
from registry.article_store import get_crawl_run
from registry.models import Article, QAPair
from tests.conftest import REPO_ROOT, reset_caches


@dataclass
class CrawledSite:
    base_url: str
    request_log: list[str]
    first_run: int
    second_run: int
    qa_after_first: list[tuple[str, str, str]]


def _qa_rows() -> list[tuple[str, str, str]]:
    with db.session_scope() as session:
        return sorted(session.execute(select(QAPair.source, QAPair.question, QAPair.answer)).all())


@pytest.fixture(scope="module")
def crawled_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CrawledSite]:
    """The whole demo site crawled twice from its sitemap into a fresh SQLite store."""
    home = tmp_path_factory.mktemp("crawl") / "home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LORAFORGE_HOME", str(home))
        mp.delenv("LORAFORGE_DATABASE_URL", raising=False)
        reset_caches()
        db.upgrade()
        log: list[str] = []
        with serve(request_log=log) as base_url:
            first = run_crawl("qa", {"sitemap_url": f"{base_url}/sitemap.xml"})
            qa_after_first = _qa_rows()
            second = run_crawl("qa", {"sitemap_url": f"{base_url}/sitemap.xml"})
            yield CrawledSite(base_url, log, first, second, qa_after_first)
        db.get_engine().dispose()
        reset_caches()


def _norm(text: str) -> str:
    return collapse_whitespace(text)


def test_every_public_qa_pair_is_recovered(crawled_site: CrawledSite) -> None:
    pairs = ground_truth(crawled_site.base_url)
    assert {t["layout"] for t in pairs} == set(LAYOUTS)  # headings, FAQ JSON-LD and <dl> pages
    truth = {(t["url"], _norm(t["question"]), _norm(t["answer"])) for t in pairs}
    stored = {(url, _norm(q), _norm(a)) for url, q, a in crawled_site.qa_after_first}
    assert len(truth) == 2183
    assert stored == truth


def test_stored_text_has_no_boilerplate(crawled_site: CrawledSite) -> None:
    with db.session_scope() as session:
        texts = [a.text + "\n" + a.title for a in session.scalars(select(Article))]
        texts += [q.question + "\n" + q.answer for q in session.scalars(select(QAPair))]
    for line in BOILERPLATE:
        assert not [t for t in texts if line in t], f"boilerplate {line!r} was stored"


def test_robots_disallowed_pages_are_never_fetched(crawled_site: CrawledSite) -> None:
    assert "/robots.txt" in crawled_site.request_log
    assert not [p for p in crawled_site.request_log if p.startswith("/private/")]
    with db.session_scope() as session:
        assert not session.scalar(select(Article).where(Article.url.contains("/private/")))


def test_crawl_run_row_is_finished_with_correct_counts(crawled_site: CrawledSite) -> None:
    run = get_crawl_run(crawled_site.first_run)
    assert run.status == "finished" and run.finished_at is not None and run.error is None
    # 255 document pages + home, 14 collection index pages (20 topics each) and the about page.
    assert (run.pages_seen, run.items_stored, run.items_updated) == (271, 255, 0)
    assert (run.items_unchanged, run.items_dropped, run.qa_pairs) == (0, 0, 2183)
    assert run.args["sitemap_url"].endswith("/sitemap.xml")


def test_recrawl_stores_nothing_twice(crawled_site: CrawledSite) -> None:
    assert _qa_rows() == crawled_site.qa_after_first
    with db.session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Article)) == 255
    run = get_crawl_run(crawled_site.second_run)
    assert run.status == "finished"
    assert (run.items_stored, run.items_updated, run.items_unchanged) == (0, 0, 255)
    assert run.qa_pairs == 0


def test_a_robots_txt_that_cannot_be_fetched_means_nothing_is_crawled(home: Path) -> None:
    # Scrapy alone would read an unreachable robots.txt as "allow all" and fetch PRIVATE_PATH.
    log: list[str] = []
    busy = Page("text/plain", b"busy, come back later", status=503)
    with serve(per_collection=2, request_log=log, extra_pages={"/robots.txt": busy}) as base_url:
        with pytest.raises(CrawlError, match=r"robots\.txt could not be fetched"):
            run_crawl("qa", {"sitemap_url": f"{base_url}/sitemap.xml"})
    assert log and set(log) == {"/robots.txt"}
    with db.session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Article)) == 0


def test_link_crawl_obeys_robots_and_drops_tracking_url_duplicates(home: Path) -> None:
    log: list[str] = []
    with serve(per_collection=3, request_log=log) as base_url:
        run_id = run_crawl("qa", {"start_url": base_url + "/", "topic": "medicine"})
    assert PRIVATE_PATH not in [p.split("?")[0] for p in log]
    # Related-links asides add ?utm_ copies of pages; the canonical URL makes them one page.
    assert any("utm_source" in p for p in log)
    pages = 3 * len(COLLECTION_TITLES)
    run = get_crawl_run(run_id)
    assert run.items_stored == pages and run.drop_reasons.get("duplicate url", 0) >= 1
    with db.session_scope() as session:
        urls = list(session.scalars(select(Article.url)))
        topics = set(session.scalars(select(QAPair.topic)))
    assert len(urls) == pages and not [u for u in urls if "utm_" in u]
    assert topics == {"medicine"}


def test_crawl_and_recrawl_on_sqlite_and_postgres(store_url: str) -> None:
    with serve(per_collection=2) as base_url:
        truth = {(t["url"], _norm(t["question"]), _norm(t["answer"]))
                 for t in ground_truth(base_url, per_collection=2)}
        first = run_crawl("qa", {"sitemap_url": f"{base_url}/sitemap.xml"}, database_url=store_url)
        second = run_crawl("qa", {"sitemap_url": f"{base_url}/sitemap.xml"}, database_url=store_url)
    with db.session_scope(store_url) as session:
        rows = session.execute(select(QAPair.source, QAPair.question, QAPair.answer))
        stored = {(u, _norm(q), _norm(a)) for u, q, a in rows}
    assert stored == truth
    one, two = get_crawl_run(first, url=store_url), get_crawl_run(second, url=store_url)
    pages = 2 * len(COLLECTION_TITLES)
    assert (one.status, one.items_stored, one.qa_pairs) == ("finished", pages, len(truth))
    assert (two.status, two.items_stored, two.items_unchanged) == ("finished", 0, pages)
    assert two.qa_pairs == 0


def test_run_crawl_on_a_dead_server_raises_crawl_error(home: Path) -> None:
    with pytest.raises(CrawlError, match="no page could be fetched"):
        run_crawl("qa", {"sitemap_url": "http://127.0.0.1:9/sitemap.xml"},
                  settings={"RETRY_TIMES": "0"})


def test_cli_crawl_on_a_dead_server_prints_one_error_line(home: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "loraforge", "crawl", "qa", "--sitemap",
         "http://127.0.0.1:9/sitemap.xml", "-s", "RETRY_TIMES=0"],
        cwd=REPO_ROOT, env={**os.environ, "COLUMNS": "200"}, capture_output=True, text=True,
        timeout=120,
    )
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: crawl run #") and "127.0.0.1:9" in lines[0]
    assert "Traceback" not in result.stdout + result.stderr
