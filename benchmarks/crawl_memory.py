"""A long crawl stays bounded: resident memory of the crawl process over a 10,000-page site.

    python benchmarks/crawl_memory.py --pages 10000

Serves a synthetic site of PAGES question/answer pages on 127.0.0.1 (the same generator as
``benchmarks/crawl.py``), crawls it with the ``qa`` spider into a fresh SQLite store, and samples
the crawl process's resident set size (``VmRSS`` in /proc) twice a second. It reports the median
RSS of the first and the last quarter of the samples with their ratio (flat memory: about 1.0),
the peak, and whether every page was stored exactly once. Not part of the test suite: it takes
minutes.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.crawl import THROUGHPUT, build_pages  # noqa: E402


def rss_bytes(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pages", type=int, default=10_000, help="pages on the site (10000)")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between samples")
    args = parser.parse_args()

    from sqlalchemy import func, select

    from crawlers.demo_site import serve
    from crawlers.run import crawl_command
    from registry import db
    from registry.models import Article, QAPair

    home = Path(tempfile.mkdtemp(prefix="loraforge-crawlmem-"))
    os.environ["LORAFORGE_HOME"] = str(home)
    env = {**os.environ, "SCRAPY_SETTINGS_MODULE": "crawlers.settings", "PYTHONUNBUFFERED": "1"}
    url = f"sqlite:///{home / 'crawl.db'}"
    db.upgrade(url)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base_url = f"http://127.0.0.1:{port}"
    pages = build_pages(args.pages, base_url)
    samples: list[tuple[float, int]] = []
    with serve(port=port, per_collection=0, extra_pages=pages):
        command = crawl_command("qa", {"sitemap_url": f"{base_url}/bench-sitemap.xml"},
                                database_url=url, settings={**THROUGHPUT, "LOG_LEVEL": "WARNING"})
        started = time.monotonic()
        with open(home / "crawl.log", "w") as log:
            proc = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log,
                                    stderr=subprocess.STDOUT)
            while proc.poll() is None:
                rss = rss_bytes(proc.pid)
                if rss is not None:
                    samples.append((time.monotonic() - started, rss))
                time.sleep(args.interval)
        seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"crawl failed ({proc.returncode}); see {home / 'crawl.log'}")
    with db.session_scope(url) as session:
        stored = session.scalar(select(func.count()).select_from(Article))
        distinct = session.scalar(select(func.count(func.distinct(Article.url))))
        pairs = session.scalar(select(func.count()).select_from(QAPair))
    quarter = max(1, len(samples) // 4)
    first = statistics.median(r for _, r in samples[:quarter])
    last = statistics.median(r for _, r in samples[-quarter:])
    peak = max(r for _, r in samples)
    mib = 2**20
    print(f"{args.pages} pages, crawled in {seconds:.0f} s ({len(samples)} RSS samples)")
    print(f"pages stored {stored} (distinct URLs {distinct}), QA pairs {pairs}: "
          f"{'every page once' if stored == distinct == args.pages else 'MISMATCH'}")
    print(f"crawl process RSS, median of the first quarter {first / mib:.0f} MiB, of the last "
          f"quarter {last / mib:.0f} MiB (last / first {last / first:.2f}); "
          f"peak {peak / mib:.0f} MiB")


if __name__ == "__main__":
    main()
