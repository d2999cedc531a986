"""Several processes writing one store at once: imports, crawls, a snapshot build, a training.

Each import is a separate ``loraforge``-style job in its own process, started together, with
overlapping rows (the same pages in every file), on real SQLite and real PostgreSQL. Every job
must end with its true status, every page must be stored exactly once, and no job may fail
with "database is locked".
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from registry.db import session_scope
from registry.models import Adapter, Article, CrawlRun, DatasetSnapshot, QAPair, TrainingRun

JOBS = 4
SHARED_ROWS = 30  # in every file: stored once, by whichever job gets there first
OWN_ROWS = 30  # in one file only


def _csv(path: Path, job: int) -> None:
    lines = ["question,answer,source,focus_area"]
    for i in range(SHARED_ROWS):
        lines.append(f"What is shared condition {i}?,Shared condition {i} is a condition that "
                     f"affects the body in way number {i} and needs care.,"
                     f"https://shared.example/{i},shared {i}")
    for i in range(OWN_ROWS):
        lines.append(f"What is condition {job}-{i}?,Condition {job}-{i} is a condition that "
                     f"affects the body in way {job}-{i} and needs care.,"
                     f"https://job{job}.example/{i},condition {job}-{i}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _job(args: tuple[str, str, str, str]) -> str:
    """One job in a fresh process: ``import`` a CSV file or build a ``snapshot`` by name."""
    home, url, kind, target = args
    os.environ["LORAFORGE_HOME"] = home
    os.environ["LORAFORGE_DATABASE_URL"] = url
    from crawlers.importers import import_file
    from curation.build import build_snapshot
    from tests.conftest import reset_caches

    reset_caches()
    try:
        if kind == "import":
            import_file(Path(target), "csv", database_url=url,
                        settings={"ARTICLE_STORE_BATCH_SIZE": "1"})  # many short transactions
        else:
            build_snapshot(name=target, test_fraction=0.2, seed=0)
        return "ok"
    except Exception as exc:  # reported to the test, which names the failure
        return f"{type(exc).__name__}: {exc}"


def test_imports_and_a_snapshot_build_at_once_store_each_page_once(store_url: str,
                                                                   tmp_path: Path):
    home = os.environ["LORAFORGE_HOME"]
    files = []
    for job in range(JOBS):
        _csv(tmp_path / f"job{job}.csv", job)
        files.append(str(tmp_path / f"job{job}.csv"))
    # A first import so the snapshot build has rows to read while the others write.
    assert _job((home, store_url, "import", files[0])) == "ok"

    context = multiprocessing.get_context("spawn")  # a fresh interpreter per job, as a CLI is
    with context.Pool(JOBS + 1) as pool:
        imports = pool.map_async(_job, [(home, store_url, "import", f) for f in files[1:]] * 2)
        snapshot = pool.apply_async(_job, ((home, store_url, "snapshot", "during"),))
        results = imports.get(timeout=300) + [snapshot.get(timeout=300)]
    assert results == ["ok"] * len(results), results

    with session_scope(store_url) as session:
        pages = session.scalar(select(func.count()).select_from(Article))
        distinct = session.scalar(select(func.count(func.distinct(Article.url))))
        pairs = session.scalar(select(func.count()).select_from(QAPair))
        statuses = list(session.scalars(select(CrawlRun.status)))
    assert pages == distinct
    assert pairs == SHARED_ROWS + JOBS * OWN_ROWS
    assert len(statuses) == 1 + 2 * (JOBS - 1)
    assert {s.value for s in statuses} == {"finished"}


def test_two_crawls_a_snapshot_build_and_a_training_at_once_each_end_as_they_should(
        store_url: str):
    """The jobs a team runs on one store in an afternoon, as CLI processes started together."""
    from crawlers.demo_site import serve
    from curation.build import build_snapshot
    from tests.trainers.conftest import insert_qa_pairs, read_medquad
    from trainers.base_model import build_tiny_base

    insert_qa_pairs(read_medquad(limit=40))
    build_tiny_base(steps=10)
    build_snapshot(name="before", seed=0)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    with serve(per_collection=3) as site:
        commands = {
            "qa crawl": ["crawl", "qa", "--sitemap", f"{site}/sitemap.xml"],
            "articles crawl": ["crawl", "articles", "--start-url", f"{site}/",
                               "--topic", "health"],
            "snapshot build": ["data", "build", "--name", "during", "--clusters", "0"],
            "training": ["train", "--dataset", "before", "--name", "during", "--max-steps", "4",
                         "--set", "progress_bar=false", "--set", "generate_examples=1"],
        }
        jobs = {name: subprocess.Popen([sys.executable, "-m", "loraforge", *args], env=env,
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       text=True)
                for name, args in commands.items()}
        outcomes = {name: (job.wait(timeout=600), job.stdout.read()[-1500:])
                    for name, job in jobs.items()}
    failed = {name: out for name, (code, out) in outcomes.items() if code != 0}
    assert not failed, failed

    with session_scope(store_url) as session:
        pages = session.scalar(select(func.count()).select_from(Article))
        distinct = session.scalar(select(func.count(func.distinct(Article.url))))
        questions = session.scalar(select(func.count()).select_from(QAPair))
        distinct_questions = session.scalar(
            select(func.count(func.distinct(QAPair.content_hash))))
        crawls = [(r.spider, r.status.value) for r in session.scalars(select(CrawlRun))]
        runs = [r.status.value for r in session.scalars(select(TrainingRun))]
        snapshots = set(session.scalars(select(DatasetSnapshot.name)))
        adapters = [a.name for a in session.scalars(select(Adapter))]
    assert pages == distinct and questions == distinct_questions
    assert pages > 1
    assert sorted(crawls) == [("articles", "finished"), ("qa", "finished")]
    assert runs == ["succeeded"] and adapters == ["during"]
    assert snapshots == {"before", "during"}


@pytest.fixture(autouse=True)
def _no_fork_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
