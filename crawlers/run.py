"""Run a spider in a child process and report on it as a crawl-run row.

Twisted's reactor can start only once per process, so every crawl gets a fresh interpreter:
``python -m scrapy crawl SPIDER -a k=v ...`` in the repo root, never through a shell.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from core.jobs import Job
from core.settings import get_settings
from crawlers.errors import CrawlError
from crawlers.pipelines import CLEAN_STOP_FILE, RUN_ID_FILE
from registry.article_store import finish_crawl_run, get_crawl_run
from registry.errors import StoreError
from registry.models import CrawlStatus

logger = logging.getLogger(__name__)
# The folder holding our packages: the checkout, or site-packages for an installed wheel.
PACKAGE_ROOT = Path(__file__).resolve().parent.parent
_ERROR_LINE = re.compile(r"(\] (ERROR|CRITICAL): |^\w*(Error|Exception): )")


PROGRESS_FIELDS = ("run_id", "pages", "stored", "updated", "unchanged", "dropped", "qa_pairs")


@dataclass(frozen=True)
class CrawlProgress:
    run_id: int
    pages: int
    stored: int
    updated: int
    unchanged: int
    dropped: int
    qa_pairs: int


def job_dir(spider: str) -> Path:
    return get_settings().crawl_jobs_dir / spider


def crawl_env() -> dict[str, str]:
    """The environment of a crawl child: our Scrapy settings and our packages, from anywhere."""
    path = os.pathsep.join(p for p in (str(PACKAGE_ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "SCRAPY_SETTINGS_MODULE": "crawlers.settings", "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": path}


def crawl_command(spider: str, spider_args: dict[str, str], *, jobdir: Path | None = None,
                  database_url: str | None = None,
                  settings: dict[str, str] | None = None) -> list[str]:
    command = [sys.executable, "-m", "scrapy", "crawl", spider]
    for key, value in spider_args.items():
        command += ["-a", f"{key}={value}"]
    overrides = dict(settings or {})
    if jobdir is not None:
        overrides["JOBDIR"] = str(jobdir)
    if database_url:
        overrides["ARTICLE_STORE_URL"] = database_url
    for key, value in overrides.items():
        command += ["-s", f"{key}={value}"]
    return command


# The last line of a Python traceback: "module.SomeError: message". It names the cause that
# a log line such as "[asyncio] ERROR: Task exception was never retrieved" only wraps.
_EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_][\w]*\.)*[A-Za-z_]\w*(?:Error|Exception)(?::|$)")


def _last_error(lines: list[str]) -> str:
    causes = [line.strip() for line in lines if _EXCEPTION_LINE.match(line.strip())]
    if causes:
        return causes[-1][-300:]
    errors = [line.strip() for line in lines if _ERROR_LINE.search(line)]
    if errors:
        return errors[-1][-300:]
    return lines[-1].strip()[-300:] if lines else "no output"


def _follow(job: Job, on_progress: Callable[[CrawlProgress], None] | None
            ) -> tuple[int | None, int, list[str]]:
    """(run id, exit code, last log lines) of a crawl job, passing its progress events on."""
    run_id, update = None, None
    for update in job.updates():
        event = update.progress
        if event is not None and event.get("run_id") is not None:
            run_id = int(event["run_id"])
            if on_progress is not None and update.result is None:
                on_progress(CrawlProgress(**{f: int(event[f]) for f in PROGRESS_FIELDS}))
    assert update is not None and update.result is not None
    return run_id, update.result.exit_code, update.log.splitlines()


def _mark_interrupted(run_id: int, database_url: str | None, error: str) -> None:
    run = get_crawl_run(run_id, url=database_url)
    if run.status == CrawlStatus.running.value:
        finish_crawl_run(run_id, status=CrawlStatus.interrupted, pages_seen=run.pages_seen,
                         items_dropped=run.items_dropped, drop_reasons=run.drop_reasons,
                         error=error, url=database_url)


def _prepare_jobdir(jobdir: Path, resume: bool, database_url: str | None) -> None:
    """Keep the JOBDIR of a crawl that stopped cleanly; discard one whose process died, or whose
    store failed to take pages the JOBDIR counts as done.

    Scrapy writes its request queue's bookkeeping only when it closes, so after a kill -9 the
    queue cannot be trusted: pages would be lost or fetched twice. Such a resume starts over
    instead, and the idempotent store turns every page stored before the kill into "unchanged":
    each page is still stored exactly once.
    """
    if not jobdir.exists():
        return
    if resume and (jobdir / CLEAN_STOP_FILE).exists():
        return
    run_file = jobdir / RUN_ID_FILE
    if resume and run_file.exists():
        stale = int(run_file.read_text().strip() or 0)
        with suppress(StoreError, ValueError):
            _mark_interrupted(stale, database_url, "the crawler process died; a new run resumed it")
        logger.warning("crawl run #%d stopped without a clean close (its process died, or the "
                       "store did not take all its pages); starting over, pages it stored are "
                       "left unchanged", stale)
    shutil.rmtree(jobdir)


def run_crawl(
    spider: str,
    spider_args: dict[str, str],
    resume: bool = False,
    database_url: str | None = None,
    *,
    settings: dict[str, str] | None = None,
    on_progress: Callable[[CrawlProgress], None] | None = None,
) -> int:
    """Crawl and return the crawl-run id; raise ``CrawlError`` with one line when it fails.

    Every crawl keeps its state in a JOBDIR so an interrupted one can go on with ``resume=True``;
    a fresh crawl clears it, and a finished crawl removes it.
    """
    jobdir = job_dir(spider)
    _prepare_jobdir(jobdir, resume, database_url)
    jobdir.parent.mkdir(parents=True, exist_ok=True)
    command = crawl_command(spider, spider_args, jobdir=jobdir, database_url=database_url,
                            settings=settings)
    # Run from the job's own folder, whatever the caller's working directory; our packages come
    # first on the path, so a folder there named like one of them cannot shadow it.
    job = Job(command, env=crawl_env(), cwd=jobdir.parent)
    try:
        run_id, returncode, tail = _follow(job, on_progress)
    except KeyboardInterrupt:
        job.cancel()  # Scrapy closes gracefully on SIGINT and keeps its JOBDIR for --resume
        raise CrawlError(f"crawl interrupted; run it again with --resume to continue "
                         f"(state in {jobdir})") from None
    if run_id is None:
        raise CrawlError(f"the {spider} crawl did not start: {_last_error(tail)}")
    try:
        if returncode != 0:
            _mark_interrupted(run_id, database_url, f"the crawler process exited with code "
                              f"{returncode}; resume with --resume")
        run = get_crawl_run(run_id, url=database_url)
    except StoreError as exc:
        raise CrawlError(f"crawl run #{run_id}: {exc}") from exc
    if run.status != "finished":
        raise CrawlError(f"crawl run #{run_id} {run.status}: {run.error or _last_error(tail)}")
    if returncode != 0:
        raise CrawlError(f"crawl run #{run_id} exited with code {returncode}: "
                         f"{_last_error(tail)}")
    shutil.rmtree(jobdir, ignore_errors=True)
    return run_id
