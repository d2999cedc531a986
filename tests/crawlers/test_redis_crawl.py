"""scrapy-redis opt-in: two crawler processes share one Redis queue and split one site."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from crawlers.demo_site import ground_truth, serve
from crawlers.demo_site.render import COLLECTION_TITLES
from crawlers.run import crawl_command, crawl_env
from crawlers.text import collapse_whitespace
from registry import db
from registry.models import Article, QAPair


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A throwaway redis-server on a free loopback port."""
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("LORAFORGE_REQUIRE_REDIS"):
            pytest.fail("LORAFORGE_REQUIRE_REDIS is set but redis-server was not found")
        pytest.skip("redis-server not found; install Debian's `redis-server` package to run the "
                    "scrapy-redis test")
    pytest.importorskip("scrapy_redis", reason="scrapy-redis is not installed")
    port = _free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while True:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                break
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            pytest.fail(f"redis-server did not start on port {port}")
        time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    process.terminate()
    process.wait(timeout=10)


def test_two_crawlers_sharing_redis_fetch_and_store_each_page_once(home: Path,
                                                                 redis_url: str) -> None:
    import redis

    per_collection = 8
    log: list[str] = []
    env = crawl_env()
    # Idle a little before closing, so that the second crawler takes requests the first one
    # queued rather than closing at once on an empty queue.
    settings = {"REDIS_URL": redis_url, "SCHEDULER_IDLE_BEFORE_CLOSE": "2",
                "AUTOTHROTTLE_ENABLED": "0", "DOWNLOAD_DELAY": "0.02"}
    with serve(per_collection=per_collection, request_log=log) as base_url:
        command = crawl_command("qa", {"sitemap_url": f"{base_url}/sitemap.xml"},
                                settings=settings)
        crawlers = [subprocess.Popen(command, cwd=home, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True) for _ in range(2)]
        outputs = [c.communicate(timeout=180)[0] for c in crawlers]
        truth = {(t["url"], collapse_whitespace(t["question"]), collapse_whitespace(t["answer"]))
                 for t in ground_truth(base_url, per_collection=per_collection)}
    for crawler, output in zip(crawlers, outputs, strict=True):
        assert crawler.returncode == 0, output[-2000:]
        assert "scrapy_redis.scheduler.Scheduler" in output
    # What each crawler said about robots.txt, for the record if the counts below are wrong.
    robots = [line for o in outputs for line in o.splitlines()
              if "robots" in line.lower() or "staff-notes" in line]
    pages = Counter(p for p in log if p.endswith(".html"))
    assert pages and max(pages.values()) == 1, pages  # no page fetched by both crawlers
    with db.session_scope() as session:
        stored = {(u, collapse_whitespace(q), collapse_whitespace(a)) for u, q, a in
                  session.execute(select(QAPair.source, QAPair.question, QAPair.answer))}
        assert session.scalar(select(func.count()).select_from(Article)) == \
            len(COLLECTION_TITLES) * per_collection, robots
    assert stored == truth
    assert redis.Redis.from_url(redis_url).exists("qa:dupefilter")
