"""A batch the store fails to write is not lost: its pages go into the next batch."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest
from scrapy.utils.test import get_crawler
from sqlalchemy import func, select

from crawlers.demo_site import ground_truth, serve
from crawlers.demo_site.render import COLLECTION_TITLES
from crawlers.errors import CrawlError
from crawlers.items import QAPageItem, QAPairItem
from crawlers.pipelines import CLEAN_STOP_FILE, QUIET_WRITE_RETRIES, ArticleStorePipeline
from crawlers.run import CrawlProgress, job_dir, run_crawl
from crawlers.spiders.qa import QASpider
from crawlers.text import collapse_whitespace
from registry.article_store import get_crawl_run
from registry.db import session_scope
from registry.models import Article, QAPair


def _page(i: int) -> QAPageItem:
    return QAPageItem(url=f"http://127.0.0.1/p{i}.html", focus_area=f"Topic {i}",
                      text=f"Topic {i}\n\nWhat is topic {i}?", topic="health",
                      qa_pairs=[QAPairItem(f"What is topic {i}?", f"Topic {i} is number {i}.")])


def _counts() -> tuple[int, int]:
    with session_scope() as session:
        return (session.scalar(select(func.count()).select_from(Article)),
                session.scalar(select(func.count()).select_from(QAPair)))


def _pipeline(flush_seconds: float) -> ArticleStorePipeline:
    crawler = get_crawler(QASpider, {"ARTICLE_STORE_BATCH_SIZE": 2,
                                     "ARTICLE_STORE_FLUSH_SECONDS": flush_seconds,
                                     "ARTICLE_STORE_WRITER_PROCESS": False})
    crawler.spider = QASpider.from_crawler(crawler, start_url="http://127.0.0.1/")
    pipeline = ArticleStorePipeline.from_crawler(crawler)
    pipeline.open_spider()
    return pipeline


def _take_articles_away(database: Path, away: bool) -> None:
    """Another program renames the articles table: the store's writes fail for real."""
    names = ("articles", "articles_away") if away else ("articles_away", "articles")
    with sqlite3.connect(database) as other:
        other.execute("ALTER TABLE {} RENAME TO {}".format(*names))


def test_a_failed_batch_write_waits_for_the_next_batch_and_loses_no_page(home: Path, caplog):
    pipeline = _pipeline(flush_seconds=3600)  # only full batches are written
    for i in range(2):
        pipeline.process_item(_page(i))
    assert _counts() == (2, 2)

    _take_articles_away(home / "loraforge.db", away=True)
    with caplog.at_level(logging.WARNING, logger="crawlers.pipelines"):
        for i in (2, 3):
            pipeline.process_item(_page(i))  # the write fails: no item error, pages kept
    assert [r.url for r in pipeline.batch] == [_page(2).url, _page(3).url]
    assert "writing 2 pages to the store failed" in caplog.text

    _take_articles_away(home / "loraforge.db", away=False)
    pipeline.process_item(_page(4))  # a failing store is not resent the batch with every page
    assert len(pipeline.batch) == 3
    pipeline.close_spider()
    assert _counts() == (5, 5)
    with session_scope() as session:
        urls = session.scalars(select(Article.url)).all()
    assert sorted(urls) == sorted(_page(i).url for i in range(5))


def test_a_store_that_stays_down_fails_the_items_and_the_close(home: Path):
    pipeline = _pipeline(flush_seconds=0)  # every page is a batch
    _take_articles_away(home / "loraforge.db", away=True)
    for i in range(QUIET_WRITE_RETRIES):
        pipeline.process_item(_page(i))
    with pytest.raises(Exception, match="articles"):
        pipeline.process_item(_page(QUIET_WRITE_RETRIES))
    with pytest.raises(Exception, match="articles"):
        pipeline.close_spider()
    _take_articles_away(home / "loraforge.db", away=False)
    assert _counts() == (0, 0)
    assert len(pipeline.batch) == QUIET_WRITE_RETRIES + 1  # nothing dropped on the way


def test_a_store_that_stays_down_closes_the_crawl_and_a_resume_stores_every_page_once(home: Path):
    per_collection = 12
    database = home / "loraforge.db"
    # A page every 0.25 s is slower than the 0.2 s flush: every page is written by age, as on
    # a slow site (and on a loaded machine), where a pipeline that raised for each page once
    # used to go on crawling to the end instead of closing for the store.
    slow = {"AUTOTHROTTLE_ENABLED": "0", "DOWNLOAD_DELAY": "0.25", "CONCURRENT_REQUESTS": "1",
            "ARTICLE_STORE_BATCH_SIZE": "3", "ARTICLE_STORE_FLUSH_SECONDS": "0.2",
            "ARTICLE_STORE_MAX_PENDING": "4"}
    down: list[int] = []

    def take_the_store_away(progress: CrawlProgress) -> None:
        if progress.stored >= 3 and not down:
            down.append(progress.run_id)
            _take_articles_away(database, away=True)

    with serve(per_collection=per_collection) as base_url:
        args = {"sitemap_url": f"{base_url}/sitemap.xml"}
        with pytest.raises(CrawlError, match=r"\d+ pages could not be written to the store"):
            run_crawl("qa", args, settings=slow, on_progress=take_the_store_away)
        failed = get_crawl_run(down[0])
        assert failed.status == "failed"
        assert failed.pages_seen < len(COLLECTION_TITLES) * per_collection
        assert not (job_dir("qa") / CLEAN_STOP_FILE).exists()  # its queue counts unsaved pages

        _take_articles_away(database, away=False)
        resumed = run_crawl("qa", args, resume=True)
        truth = {(t["url"], collapse_whitespace(t["question"]), collapse_whitespace(t["answer"]))
                 for t in ground_truth(base_url, per_collection=per_collection)}

    with session_scope() as session:
        pairs = [(u, collapse_whitespace(q), collapse_whitespace(a)) for u, q, a in
                 session.execute(select(QAPair.source, QAPair.question, QAPair.answer))]
        urls = session.scalars(select(Article.url)).all()
    assert len(pairs) == len(set(pairs)) and set(pairs) == truth
    assert len(urls) == len(set(urls)) == len(COLLECTION_TITLES) * per_collection
    assert get_crawl_run(resumed).status == "finished"
