"""A batch the store fails to write is not lost: its pages go into the next batch."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from scrapy.utils.test import get_crawler
from sqlalchemy import func, select

from crawlers.items import QAPageItem, QAPairItem
from crawlers.pipelines import ArticleStorePipeline
from crawlers.spiders.qa import QASpider
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


def test_a_failed_batch_write_is_retried_with_the_next_one_and_loses_no_page(home: Path):
    crawler = get_crawler(QASpider, {"ARTICLE_STORE_BATCH_SIZE": 2,
                                     "ARTICLE_STORE_WRITER_PROCESS": False})
    crawler.spider = QASpider.from_crawler(crawler, start_url="http://127.0.0.1/")
    pipeline = ArticleStorePipeline.from_crawler(crawler)
    pipeline.open_spider()
    for i in range(2):
        pipeline.process_item(_page(i))
    assert _counts() == (2, 2)

    # Another program takes the articles table away: the next batch's write fails for real.
    database = home / "loraforge.db"
    with sqlite3.connect(database) as other:
        other.execute("ALTER TABLE articles RENAME TO articles_away")
    pipeline.process_item(_page(2))
    with pytest.raises(Exception, match="articles"):
        pipeline.process_item(_page(3))
    assert [r.url for r in pipeline.batch] == [_page(2).url, _page(3).url]

    with sqlite3.connect(database) as other:
        other.execute("ALTER TABLE articles_away RENAME TO articles")
    pipeline.process_item(_page(4))  # the failed two and this one, in one batch
    pipeline.close_spider()
    assert _counts() == (5, 5)
    with session_scope() as session:
        urls = session.scalars(select(Article.url)).all()
    assert sorted(urls) == sorted(_page(i).url for i in range(5))
