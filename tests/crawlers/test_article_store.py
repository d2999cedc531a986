"""The registry's article store on SQLite and PostgreSQL: upserts are idempotent."""

from __future__ import annotations

from sqlalchemy import func, select

from registry import db
from registry.article_store import (
    ArticleRecord,
    QARecord,
    finish_crawl_run,
    get_crawl_run,
    list_crawl_runs,
    open_crawl_run,
    store_articles,
)
from registry.models import QAPair, Source

PAGE = ArticleRecord(url="http://site.test/flu", title="Flu", text="Flu\n\nWhat is it? A virus.",
                     topic="health", qa_pairs=[QARecord("What is it?", "A virus.", "information")])


def _qa_count(url: str) -> int:
    with db.session_scope(url) as session:
        return session.scalar(select(func.count()).select_from(QAPair))


def test_changed_page_is_updated_and_unchanged_page_left_alone(store_url: str) -> None:
    run = open_crawl_run("qa", {"start_url": "http://site.test/"}, url=store_url)
    assert store_articles(run, [PAGE], url=store_url).stored == 1
    again = store_articles(run, [PAGE], url=store_url)
    assert (again.stored, again.unchanged, _qa_count(store_url)) == (0, 1, 1)

    changed = ArticleRecord(url=PAGE.url, title="Flu", text="Flu\n\nWhat is it? A virus, often.",
                            topic="health", qa_pairs=[QARecord("What is it?", "A virus, often.")])
    counts = store_articles(run, [changed], url=store_url)
    assert (counts.updated, counts.qa_added, counts.qa_removed) == (1, 1, 1)
    with db.session_scope(store_url) as session:
        assert list(session.scalars(select(QAPair.answer))) == ["A virus, often."]

    finish_crawl_run(run, status="finished", pages_seen=3, items_dropped=1,
                     drop_reasons={"duplicate url": 1}, url=store_url)
    summary = get_crawl_run(run, url=store_url)
    assert (summary.items_stored, summary.items_updated, summary.items_unchanged) == (1, 1, 1)
    assert summary.drop_reasons == {"duplicate url": 1} and summary.status == "finished"
    assert [r.id for r in list_crawl_runs(url=store_url)] == [run]


def test_pair_shared_by_two_pages_is_stored_once(store_url: str) -> None:
    run = open_crawl_run("qa", {}, url=store_url)
    twin = ArticleRecord(url="http://site.test/flu-copy", title="Flu copy", text="other",
                         qa_pairs=PAGE.qa_pairs)
    store_articles(run, [PAGE], url=store_url)
    store_articles(run, [twin], url=store_url)
    assert _qa_count(store_url) == 1


def test_one_batch_stores_like_one_call_per_page(store_url: str) -> None:
    """A batch that names a page twice, and pages that share a pair, ends as calls one by one
    would: the later version of the page wins, the shared pair is stored once."""
    run = open_crawl_run("qa", {}, url=store_url)
    twin = ArticleRecord(url="http://other.test/flu", title="Flu elsewhere", text="other",
                         qa_pairs=PAGE.qa_pairs)
    changed = ArticleRecord(url=PAGE.url, title="Flu", text="Flu, revised",
                            qa_pairs=[QARecord("What is it?", "A virus, often.")])
    pages = [ArticleRecord(url=f"http://site.test/p{i}", title=f"P{i}", text=f"text {i}",
                           qa_pairs=[QARecord(f"Q{i}?", f"A{i}."), QARecord("Shared?", "Yes.")])
             for i in range(250)]
    counts = store_articles(run, [PAGE, twin, *pages, changed], url=store_url)
    assert (counts.stored, counts.updated, counts.unchanged) == (252, 1, 0)
    assert (counts.qa_added, counts.qa_removed) == (1 + 250 + 1 + 1, 1)
    with db.session_scope(store_url) as session:
        answers = set(session.scalars(select(QAPair.answer)))
        hosts = session.scalar(select(func.count()).select_from(Source))
    assert "A virus, often." in answers and "A virus." not in answers
    assert _qa_count(store_url) == 250 + 1 + 1 and hosts == 2
    again = store_articles(run, [twin, *pages, changed], url=store_url)
    assert (again.stored, again.updated, again.unchanged, again.qa_added) == (0, 0, 252, 0)
    assert get_crawl_run(run, url=store_url).items_stored == 252
