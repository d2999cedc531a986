"""Crawls that go wrong: a killed crawler, broken pages, paginated link crawls; real HTTP."""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path

from sqlalchemy import func, select

from crawlers.demo_site import LAYOUTS, Page, ground_truth, serve
from crawlers.demo_site.render import COLLECTION_TITLES
from crawlers.run import crawl_command, crawl_env, job_dir, run_crawl
from crawlers.text import collapse_whitespace
from registry import db
from registry.article_store import get_crawl_run
from registry.models import Article, QAPair

HTML = "text/html; charset=utf-8"
PROGRESS = re.compile(r"crawl run #(\d+): \d+ pages, (\d+) stored")


def _truth(base_url: str, per_collection: int) -> set[tuple[str, str, str]]:
    return {(t["url"], collapse_whitespace(t["question"]), collapse_whitespace(t["answer"]))
            for t in ground_truth(base_url, per_collection=per_collection)}


def _stored_pairs() -> list[tuple[str, str, str]]:
    with db.session_scope() as session:
        rows = session.execute(select(QAPair.source, QAPair.question, QAPair.answer)).all()
    return [(u, collapse_whitespace(q), collapse_whitespace(a)) for u, q, a in rows]


def test_resumed_crawl_after_kill_9_stores_each_page_once(home: Path) -> None:
    per_collection = 12
    with serve(per_collection=per_collection) as base_url:
        args = {"sitemap_url": f"{base_url}/sitemap.xml"}
        slow = {"AUTOTHROTTLE_ENABLED": "0", "DOWNLOAD_DELAY": "0.1", "CONCURRENT_REQUESTS": "1",
                "ARTICLE_STORE_BATCH_SIZE": "3"}
        process = subprocess.Popen(
            crawl_command("qa", args, jobdir=job_dir("qa"), settings=slow), cwd=home,
            env=crawl_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        killed_run, stored_before_kill = None, 0
        assert process.stdout is not None
        for line in process.stdout:
            match = PROGRESS.search(line)
            if match and int(match.group(2)) >= 3:
                killed_run, stored_before_kill = int(match.group(1)), int(match.group(2))
                process.send_signal(signal.SIGKILL)
                break
        process.wait(timeout=60)
        assert process.returncode == -signal.SIGKILL and killed_run is not None
        assert get_crawl_run(killed_run).status == "running"  # nobody closed it

        resumed = run_crawl("qa", args, resume=True)
        truth = _truth(base_url, per_collection)

    pairs = _stored_pairs()
    assert len(pairs) == len(set(pairs)) and set(pairs) == truth
    with db.session_scope() as session:
        urls = list(session.scalars(select(Article.url)))
    assert len(urls) == len(set(urls)) == len(COLLECTION_TITLES) * per_collection
    old, new = get_crawl_run(killed_run), get_crawl_run(resumed)
    assert old.status == "interrupted" and "died" in (old.error or "")
    assert new.status == "finished"
    assert old.items_stored >= stored_before_kill
    assert old.items_stored + new.items_stored == len(COLLECTION_TITLES) * per_collection
    assert new.items_unchanged == old.items_stored


def _broken_pages() -> dict[str, Page]:
    links = ["malformed.html", "report", "data.json", "huge.html", "empty.html",
             "latin1-declared-utf8.html", "utf8-declared-latin1.html"]
    index = "<html><body><main><h1>Broken pages</h1><ul>" + "".join(
        f'<li><a href="/broken/{name}">{name}</a></li>' for name in links) + "</ul></main></body>"
    page = "<html lang='fr'><body><main><h1>{0}</h1><h2>{1}</h2><p>{2}</p></main></body></html>"
    return {
        "/broken/": Page(HTML, index.encode()),
        "/broken/malformed.html": Page(HTML, b"<html><body><main><h1>Malformed<h2>What is broken"
                                             b"?</h2><p>Unclosed <b>tags <div>everywhere</main>"),
        "/broken/report": Page("application/pdf", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n"),
        "/broken/data.json": Page("application/json", b'{"question": "not a page"}'),
        "/broken/huge.html": Page(HTML, b"<html><body><p>" + b"x" * 300_000 + b"</p></body>"),
        "/broken/empty.html": Page(HTML, b""),
        "/broken/latin1-declared-utf8.html": Page(HTML, page.format(
            "Caf\xe9 cr\xe8me", "O\xf9 est le caf\xe9 ?", "Pr\xe8s de la gare.").encode("latin-1")),
        "/broken/utf8-declared-latin1.html": Page("text/html; charset=iso-8859-1", page.format(
            "Na\xefve r\xe9sum\xe9", "Qu'est-ce qu'un r\xe9sum\xe9 ?", "Un texte \u2014 bref.",
        ).encode("utf-8")),
    }


def test_broken_pages_are_dropped_or_repaired_with_a_logged_reason(home: Path) -> None:
    with serve(per_collection=1, extra_pages=_broken_pages()) as base_url:
        result = subprocess.run(
            crawl_command("qa", {"start_url": f"{base_url}/broken/"},
                          settings={"DOWNLOAD_MAXSIZE": "100000", "DOWNLOAD_WARNSIZE": "0"}),
            cwd=home, env=crawl_env(), capture_output=True, text=True, timeout=120)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-2000:]
    assert "Traceback" not in log
    run = get_crawl_run(int(PROGRESS.findall(log)[-1][0]))
    assert run.status == "finished"
    assert run.drop_reasons == {"not html": 2, "too large": 1, "unparseable html": 1}
    for name, reason in [("report", "not html"), ("data.json", "not html"),
                         ("empty.html", "unparseable html")]:
        assert re.search(rf"dropped \S+/broken/{re.escape(name)}: {reason}", log), name
    assert re.search(r"dropped \S+/broken/huge.html: too large", log)
    assert "repaired" in log and "declared iso-8859-1 but the body is UTF-8" in log
    stored = {q: a for _, q, a in _stored_pairs()}
    assert stored == {"What is broken?": "Unclosed tags everywhere",
                      "Où est le café ?": "Près de la gare.",
                      "Qu'est-ce qu'un résumé ?": "Un texte — bref."}
    with db.session_scope() as session:
        titles = set(session.scalars(select(Article.title)))
        languages = set(session.scalars(select(Article.language)))
    assert {"Café crème", "Naïve résumé"} <= titles and "fr" in languages


def test_link_crawl_follows_pagination_and_recovers_every_layout(home: Path) -> None:
    per_collection = 5
    log: list[str] = []
    with serve(per_collection=per_collection, index_page_size=2, request_log=log) as base_url:
        run_id = run_crawl("qa", {"start_url": base_url + "/"})
        truth = _truth(base_url, per_collection)
    assert {"/cdc/page/2/", "/cdc/page/3/", "/seniorhealth/page/3/"} <= set(log)
    assert {t["layout"] for t in ground_truth(base_url, per_collection=per_collection)} == \
        set(LAYOUTS)
    assert set(_stored_pairs()) == truth
    assert get_crawl_run(run_id).items_stored == len(COLLECTION_TITLES) * per_collection


def test_language_filter_drops_pages_with_a_named_reason(home: Path) -> None:
    with serve(per_collection=1, extra_pages=_broken_pages()) as base_url:
        run_id = run_crawl("qa", {"start_url": f"{base_url}/broken/"},
                           settings={"VALIDATE_LANGUAGES": "en", "DOWNLOAD_MAXSIZE": "100000"})
    run = get_crawl_run(run_id)
    assert run.drop_reasons.get("language not wanted") == 2  # the two French pages
    with db.session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Article)) == 1


def test_a_crawl_that_dies_in_a_task_is_reported_by_its_cause_not_the_asyncio_wrapper():
    from collections import deque

    from crawlers.run import _last_error

    log = deque([
        "2026-12-03 10:00:00 [scrapy.core.engine] INFO: Spider opened\n",
        "2026-12-03 10:00:00 [asyncio] ERROR: Task exception was never retrieved\n",
        "Traceback (most recent call last):\n",
        '  File "crawlers/pipelines.py", line 80, in open_spider\n',
        "sqlalchemy.exc.OperationalError: (sqlite3.OperationalError) database is locked\n",
        "2026-12-03 10:00:01 [scrapy.core.engine] INFO: Spider closed (shutdown)\n",
    ])
    assert _last_error(log) == ("sqlalchemy.exc.OperationalError: (sqlite3.OperationalError) "
                                "database is locked")
    log.pop(), log.pop()  # no traceback: the log's own ERROR line is the best there is
    log.pop(), log.pop()
    assert _last_error(log).endswith("[asyncio] ERROR: Task exception was never retrieved")
