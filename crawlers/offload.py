"""Work a crawl hands to other processes so that Scrapy's one thread keeps fetching.

Scrapy downloads, parses and runs the item pipelines on a single thread. On a fast site a page's
extraction and its store write took longer than fetching it (``benchmarks/crawl.py``), so:

- page extraction runs in a pool of ``EXTRACT_PROCESSES`` worker processes (``auto``: one per
  spare core, at most four; ``0``: in the crawl's own process);
- store writes run in one writer process (``ARTICLE_STORE_WRITER_PROCESS``), one batch after the
  other, so batches land in the order they were made.

Workers are started with ``spawn``: forking a process that runs a reactor and its threads is
not safe. They are started on first use, so a crawl that fetches nothing starts none.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
MAX_AUTO_PROCESSES = 4


def process_count(value: str | int | None) -> int:
    """Worker processes for a setting: a number, or ``auto`` (one per spare core, at most 4)."""
    if value is None or str(value).strip().lower() in ("", "auto"):
        spare = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                 else os.cpu_count() or 1) - 1
        return max(1, min(MAX_AUTO_PROCESSES, spare))
    try:
        count = int(value)
    except ValueError:
        raise ValueError(f"a process count must be a whole number or 'auto', got {value!r}") \
            from None
    if count < 0:
        raise ValueError(f"a process count cannot be negative, got {count}")
    return count


def new_pool(processes: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(max_workers=processes,
                               mp_context=multiprocessing.get_context("spawn"))


class Offload:
    """Runs calls in a lazily started process pool, or inline when it has no processes."""

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self._pool: ProcessPoolExecutor | None = None

    @property
    def pool(self) -> ProcessPoolExecutor | None:
        if self._pool is None and self.processes > 0:
            self._pool = new_pool(self.processes)
        return self._pool

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """``fn(*args)`` in a worker; done already (result or exception) when inline."""
        pool = self.pool
        if pool is not None:
            return pool.submit(fn, *args)
        future: Future[T] = Future()
        try:
            future.set_result(fn(*args))
        except Exception as exc:  # noqa: BLE001 - handed to the caller through the future
            future.set_exception(exc)
        return future

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)``, awaited without blocking the reactor while a worker computes it."""
        future = self.submit(fn, *args)
        if future.done():
            return future.result()
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
