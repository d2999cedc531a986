"""Crawl throughput: the ``qa`` and ``articles`` spiders storing into SQLite and PostgreSQL
vs. a bare spider.

    python benchmarks/crawl.py --pages 2000 --repeat 3
    python benchmarks/crawl.py --pages 2000 --profile /tmp/crawl-profile   # where time goes

Serves a synthetic site of PAGES question/answer pages (MedQuAD words, the demo site's three
layouts and boilerplate) on 127.0.0.1, then crawls it from its sitemap three times, each in a
fresh process with the same throughput settings (no AutoThrottle, 16 concurrent requests):

- ``bare``: a spider that fetches every page and stores nothing (no extraction, no pipelines);
- ``qa -> SQLite``: the ``qa`` spider with every pipeline, into a fresh SQLite store;
- ``qa -> PostgreSQL``: the same into a fresh PostgreSQL cluster (skipped without initdb/pg_ctl);
- ``articles -> SQLite``: the ``articles`` spider (trafilatura extraction) on the same pages.

Pages/s is pages fetched over Scrapy's own elapsed time, so process start-up is not counted.
``--profile DIR`` runs the store crawls under cProfile (slower: compare its rows with each
other, not with a run without it), writes ``DIR/<variant>.prof`` and prints the functions
with the most time of their own.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

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


def _crawl(command: list[str], env: dict[str, str],
           profile: Path | None = None) -> tuple[int, float]:
    if profile is not None:  # "python -m scrapy ..." becomes "python -m cProfile -o F -m scrapy"
        command = [command[0], "-m", "cProfile", "-o", str(profile), *command[1:]]
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                            timeout=1800)
    log = result.stdout + result.stderr
    if result.returncode != 0 or not _ELAPSED.search(log):
        raise SystemExit(f"crawl failed ({result.returncode}): {log[-1500:]}")
    return int(_RESPONSES.findall(log)[-1]), float(_ELAPSED.findall(log)[-1])


def _store_crawl(spider: str, sitemap: str, database_url: str, env: dict[str, str],
                 profile: Path | None = None) -> tuple[int, float, int]:
    from sqlalchemy import func, select

    from crawlers.run import crawl_command
    from registry import db
    from registry.models import Article

    db.upgrade(database_url)
    args = {"sitemap_url": sitemap} if spider == "qa" else {"sitemap_urls": sitemap}
    responses, seconds = _crawl(crawl_command(spider, args, database_url=database_url,
                                              settings=THROUGHPUT), env, profile)
    with db.session_scope(database_url) as session:
        stored = session.scalar(select(func.count()).select_from(Article))
    db.get_engine(database_url).dispose()
    return responses, seconds, stored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pages", type=int, default=2000, help="pages on the site (2000)")
    parser.add_argument("--no-postgres", action="store_true", help="skip PostgreSQL")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds of every variant, bare spider first in each; the table "
                             "shows medians (1)")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="run the store crawls under cProfile, keep DIR/<variant>.prof and "
                             "print each one's top functions")
    args = parser.parse_args()
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(REPO_ROOT))
    from crawlers.demo_site import serve

    home = Path(tempfile.mkdtemp(prefix="loraforge-bench-"))
    env = {**os.environ, "LORAFORGE_HOME": str(home), "SCRAPY_SETTINGS_MODULE": "crawlers.settings",
           "PYTHONUNBUFFERED": "1"}
    os.environ["LORAFORGE_HOME"] = str(home)
    # The pages carry absolute URLs (canonical links, sitemap), so the port is chosen first.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base_url = f"http://127.0.0.1:{port}"
    pages = build_pages(args.pages, base_url)
    rows: dict[str, list[tuple[int, float, int | None, float]]] = {}
    with serve(port=port, per_collection=0, extra_pages=pages), ExitStack() as stack:
        sitemap = f"{base_url}/bench-sitemap.xml"
        bare = [sys.executable, "-m", "scrapy", "runspider", __file__, "-a",
                f"sitemap_url={sitemap}"] + [x for k, v in THROUGHPUT.items()
                                             for x in ("-s", f"{k}={v}")]
        postgres = None if args.no_postgres else stack.enter_context(_postgres())
        for round_ in range(args.repeat):
            # Each round measures the bare spider again: the variants are compared with the
            # ceiling of their own round, which drifts with whatever else the machine does.
            responses, seconds = _crawl(bare, env)
            bare_rate = responses / seconds
            rows.setdefault("bare spider (stores nothing)", []).append(
                (responses, seconds, None, 1.0))
            variants = [("qa spider -> SQLite", "qa", f"sqlite:///{home / f'qa{round_}.db'}",
                         "qa-sqlite")]
            if postgres is not None:
                variants.append(("qa spider -> PostgreSQL", "qa",
                                 postgres.create_database(f"bench{round_}"), "qa-postgres"))
            variants.append(("articles spider -> SQLite", "articles",
                             f"sqlite:///{home / f'articles{round_}.db'}", "articles-sqlite"))
            for name, spider, url, tag in variants:
                profile = _prof(args.profile, f"{tag}-{round_}")
                responses, seconds, stored = _store_crawl(spider, sitemap, url, env, profile)
                rows.setdefault(name, []).append(
                    (responses, seconds, stored, responses / seconds / bare_rate))
    print(f"\n{args.pages} pages on {base_url} (+ robots.txt and sitemap), "
          f"settings {THROUGHPUT}; median of {args.repeat} round(s)")
    print(f"{'variant':30} {'responses':>9} {'stored':>7} {'seconds':>8} {'pages/s':>8} "
          f"{'vs bare':>8}  each round")
    for name, runs in rows.items():
        responses, _, stored, _ = runs[0]
        rate = statistics.median(r / s for r, s, _, _ in runs)
        ratio = statistics.median(x for *_, x in runs)
        each = " ".join(f"{x:.2f}" for *_, x in runs)
        seconds = statistics.median(s for _, s, _, _ in runs)
        print(f"{name:30} {responses:9d} {'-' if stored is None else stored:>7} "
              f"{seconds:8.1f} {rate:8.1f} {ratio:8.2f}  {each}")
    if args.profile:
        for prof in sorted(args.profile.glob("*.prof")):
            _print_profile(prof)


@contextmanager
def _postgres() -> Iterator[Any]:
    """A throwaway PostgreSQL cluster, or None without initdb/pg_ctl."""
    from tests.postgres_cluster import start_cluster

    cluster = start_cluster()
    if cluster is None:
        print("PostgreSQL binaries not found: skipping the PostgreSQL runs")
        yield None
        return
    try:
        yield cluster
    finally:
        cluster.stop()


def _prof(folder: Path | None, variant: str) -> Path | None:
    return None if folder is None else folder / f"{variant}.prof"


def _print_profile(path: Path, top: int = 25) -> None:
    """The functions with the most time of their own, and the share of the process each took."""
    import pstats

    stats = pstats.Stats(str(path))
    total = stats.total_tt  # type: ignore[attr-defined]
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)  # type: ignore
    print(f"\n{path.stem}: {total:.1f} s profiled; own time (tottime), then with callees")
    for (file, line, func), (_, calls, own, cumulative, _) in rows[:top]:
        where = f"{Path(file).parent.name}/{Path(file).name}:{line}" if line else file
        print(f"  {own:7.2f} s {own / total:6.1%} {cumulative:8.2f} s {calls:9d}  {func}  {where}")


if __name__ == "__main__":
    main()
