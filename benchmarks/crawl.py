"""Crawl throughput: the ``qa`` spider storing into SQLite and PostgreSQL vs. a bare spider.

    python benchmarks/crawl.py --pages 2000

Serves a synthetic site of PAGES question/answer pages (MedQuAD words, the demo site's three
layouts and boilerplate) on 127.0.0.1, then crawls it from its sitemap three times, each in a
fresh process with the same throughput settings (no AutoThrottle, 16 concurrent requests):

- ``bare``: a spider that fetches every page and stores nothing (no extraction, no pipelines);
- ``sqlite``: the ``qa`` spider with every pipeline, into a fresh SQLite store;
- ``postgres``: the same into a fresh PostgreSQL cluster (skipped without initdb/pg_ctl).

Pages/s is pages fetched over Scrapy's own elapsed time, so process start-up is not counted.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import scrapy
from scrapy.utils.sitemap import Sitemap

REPO_ROOT = Path(__file__).resolve().parent.parent
THROUGHPUT = {"AUTOTHROTTLE_ENABLED": "0", "CONCURRENT_REQUESTS": "16",
              "CONCURRENT_REQUESTS_PER_DOMAIN": "16", "LOG_LEVEL": "INFO"}
_ELAPSED = re.compile(r"'elapsed_time_seconds': ([\d.]+)")
_RESPONSES = re.compile(r"'response_received_count': (\d+)")


class BareSpider(scrapy.Spider):
    """Fetches the sitemap's pages and does nothing with them: the ceiling for a crawl."""

    name = "bare"
    custom_settings = {"ITEM_PIPELINES": {}}

    def __init__(self, sitemap_url: str, **kwargs):
        super().__init__(**kwargs)
        self.sitemap_url = sitemap_url

    async def start(self):
        yield scrapy.Request(self.sitemap_url, callback=self.parse_sitemap)

    def parse_sitemap(self, response):
        for entry in Sitemap(response.body):
            yield scrapy.Request(entry["loc"], callback=self.parse)

    def parse(self, response):
        return None


def build_pages(count: int, base_url: str, seed: int = 0) -> dict:
    """``count`` distinct QA pages in the demo site's layouts, plus /bench-sitemap.xml."""
    from crawlers.demo_site.medquad import QA, Document, load_documents
    from crawlers.demo_site.render import Page, _document_page, _sitemap, layout_of

    rng = random.Random(seed)
    words = sorted({w for d in load_documents() for qa in d.qa_pairs
                    for b in qa.answer_blocks for w in (b if isinstance(b, str) else " ".join(b))
                    .split() if w.isalpha()})

    def sentence(n: int) -> str:
        return " ".join(rng.choice(words) for _ in range(n)).capitalize() + "."

    pages = {}
    for i in range(count):
        pairs = tuple(QA(sentence(8)[:-1] + "?", (sentence(30), [sentence(6), sentence(6)]),
                         "information") for _ in range(5))
        doc = Document("cdc", f"{i:06d}", f"Topic {i} {sentence(3)[:-1]}", "", pairs)
        pages[doc.path] = Page("text/html; charset=utf-8",
                               _document_page(doc, base_url, [], layout_of(i)))
    pages["/bench-sitemap.xml"] = Page("application/xml",
                                       _sitemap([base_url + p for p in pages]))
    return pages


def _crawl(command: list[str], env: dict[str, str]) -> tuple[int, float]:
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                            timeout=1800)
    log = result.stdout + result.stderr
    if result.returncode != 0 or not _ELAPSED.search(log):
        raise SystemExit(f"crawl failed ({result.returncode}): {log[-1500:]}")
    return int(_RESPONSES.findall(log)[-1]), float(_ELAPSED.findall(log)[-1])


def _store_crawl(sitemap: str, database_url: str,
                 env: dict[str, str]) -> tuple[int, float, int]:
    from sqlalchemy import func, select

    from crawlers.run import crawl_command
    from registry import db
    from registry.models import Article

    db.upgrade(database_url)
    responses, seconds = _crawl(crawl_command("qa", {"sitemap_url": sitemap},
                                              database_url=database_url, settings=THROUGHPUT), env)
    with db.session_scope(database_url) as session:
        stored = session.scalar(select(func.count()).select_from(Article))
    db.get_engine(database_url).dispose()
    return responses, seconds, stored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pages", type=int, default=2000, help="pages on the site (2000)")
    parser.add_argument("--no-postgres", action="store_true", help="skip PostgreSQL")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO_ROOT))
    from crawlers.demo_site import serve

    home = Path(tempfile.mkdtemp(prefix="loraforge-bench-"))
    env = {**os.environ, "LORAFORGE_HOME": str(home), "SCRAPY_SETTINGS_MODULE": "crawlers.settings",
           "PYTHONUNBUFFERED": "1"}
    os.environ["LORAFORGE_HOME"] = str(home)
    results: dict[str, tuple[int, float, int | None]] = {}
    # The pages carry absolute URLs (canonical links, sitemap), so the port is chosen first.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base_url = f"http://127.0.0.1:{port}"
    pages = build_pages(args.pages, base_url)
    with serve(port=port, per_collection=0, extra_pages=pages):
        sitemap = f"{base_url}/bench-sitemap.xml"
        bare = [sys.executable, "-m", "scrapy", "runspider", __file__, "-a",
                f"sitemap_url={sitemap}"] + [x for k, v in THROUGHPUT.items()
                                             for x in ("-s", f"{k}={v}")]
        results["bare spider (stores nothing)"] = (*_crawl(bare, env), None)
        results["qa spider -> SQLite"] = _store_crawl(
            sitemap, f"sqlite:///{home / 'bench.db'}", env)
        if not args.no_postgres:
            from tests.postgres_cluster import start_cluster

            cluster = start_cluster()
            if cluster is None:
                print("PostgreSQL binaries not found: skipping the PostgreSQL run")
            else:
                try:
                    url = cluster.create_database("bench")
                    results["qa spider -> PostgreSQL"] = _store_crawl(sitemap, url, env)
                finally:
                    cluster.stop()
    bare_rate = None
    print(f"\n{args.pages} pages on {base_url} (+ robots.txt and sitemap), "
          f"settings {THROUGHPUT}")
    print(f"{'variant':30} {'responses':>9} {'stored':>7} {'seconds':>8} {'pages/s':>8} "
          f"{'vs bare':>8}")
    for name, (responses, seconds, stored) in results.items():
        rate = responses / seconds
        bare_rate = bare_rate or rate
        print(f"{name:30} {responses:9d} {'-' if stored is None else stored:>7} {seconds:8.1f} "
              f"{rate:8.1f} {rate / bare_rate:8.2f}")


if __name__ == "__main__":
    main()
