"""Work a crawl hands to other processes so that Scrapy's one thread keeps fetching.

Scrapy downloads, parses and runs the item pipelines on a single thread. On a fast site a page's
extraction and its store write took longer than fetching it (``benchmarks/crawl.py``), so:

- page extraction runs in ``EXTRACT_PROCESSES`` worker processes (``PageWorkers``; ``auto``:
  one per spare core, at most four; ``0``: in the crawl's own process);
- store writes run in one writer process (``Offload``, ``ARTICLE_STORE_WRITER_PROCESS``), one
  batch after the other, so batches land in the order they were made.

Workers are started with ``spawn``: forking a process that runs a reactor and its threads is
not safe. They start on first use, so a crawl that fetches nothing starts none.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import pickle
import struct
import threading
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import count
from typing import Any, TypeVar

T = TypeVar("T")
MAX_AUTO_PROCESSES = 4
_HEADER = struct.Struct("!i")  # multiprocessing.Connection's frame header: the payload's length
_READ_CHUNK = 1 << 20

logger = logging.getLogger(__name__)


def process_count(value: str | int | None) -> int:
    """Worker processes for a setting: a number, or ``auto`` (one per spare core, at most 4)."""
    if value is None or str(value).strip().lower() in ("", "auto"):
        spare = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                 else os.cpu_count() or 1) - 1
        return max(1, min(MAX_AUTO_PROCESSES, spare))
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"a process count must be a whole number or 'auto', got {value!r}") \
            from None
    if number < 0:
        raise ValueError(f"a process count cannot be negative, got {number}")
    return number


class Offload:
    """Runs calls in one lazily started worker process, in order; inline with no process.

    A ``concurrent.futures`` pool: about a millisecond of this process's time per call, fine for
    a store batch every hundred pages, too much for every page (see ``PageWorkers``)."""

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self._pool: ProcessPoolExecutor | None = None

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """``fn(*args)`` in the worker; a future already done (result or exception) inline."""
        if self.processes > 0:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    max_workers=self.processes, mp_context=multiprocessing.get_context("spawn"),
                    initializer=_exit_with_parent)
            return self._pool.submit(fn, *args)
        future: Future[T] = Future()
        try:
            future.set_result(fn(*args))
        except Exception as exc:  # handed to the caller through the future
            future.set_exception(exc)
        return future

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def _exit_with_parent() -> None:
    """In a pool worker: exit when the crawl that started it is gone. A pool worker waits on a
    queue whose writing end it holds itself, so a crawl killed with -9 left it waiting forever;
    its open transaction, if any, is rolled back by the store."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


READY = -1  # the task id of a worker's first frame: its modules are imported


def _serve(conn: Any, preload: tuple[str, ...]) -> None:
    """A page worker's loop: (id, function, args) in, (id, ok, result or exception) out."""
    for module in preload:
        importlib.import_module(module)
    conn.send_bytes(pickle.dumps((READY, True, None)))
    while True:
        try:
            task_id, fn, args = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):  # the crawl closed the pipe, or died
            return
        try:
            reply = (task_id, True, fn(*args))
        except Exception as exc:  # the crawl decides what a failed page means
            reply = (task_id, False, exc)
        try:
            payload = pickle.dumps(reply, pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # an exception that does not pickle still reports its text
            payload = pickle.dumps((task_id, False, RuntimeError(f"{type(exc).__name__}: {exc}")))
        try:
            conn.send_bytes(payload)
        except OSError:
            return


class WorkerDied(RuntimeError):
    """A page worker process ended while it held pages."""


@dataclass
class _Worker:
    process: Any
    conn: Any  # the pipe's end; this process reads and writes its descriptor directly
    outgoing: bytearray = field(default_factory=bytearray)
    incoming: bytearray = field(default_factory=bytearray)
    pending: dict[int, asyncio.Future] = field(default_factory=dict)
    ready: bool = False

    @property
    def fd(self) -> int:
        return self.conn.fileno()


class PageWorkers:
    """Per-page calls in worker processes, driven by the reactor's event loop.

    The pipes are non-blocking and watched by the loop, so a call costs this process a pickle
    and a write, about a tenth of a ``concurrent.futures`` pool's call (whose helper threads
    also take turns at the GIL with the reactor). If a worker dies its pages fail with
    ``WorkerDied`` and later calls run inline: a crawl does not stop for it.
    """

    def __init__(self, processes: int, start_after: int = 0,
                 preload: tuple[str, ...] = ()) -> None:
        self.processes = processes
        self.start_after = start_after
        self.preload = preload
        self.workers: list[_Worker] = []
        self.broken = False
        self.calls = 0
        self._ids = count()
        self._loop: asyncio.AbstractEventLoop | None = None

    def _start(self) -> None:
        self._loop = asyncio.get_running_loop()
        context = multiprocessing.get_context("spawn")
        for _ in range(self.processes):
            parent, child = context.Pipe(duplex=True)
            process = context.Process(target=_serve, args=(child, self.preload), daemon=True,
                                      name="loraforge-page-worker")
            process.start()
            child.close()
            # Read and written here without blocking, framed as Connection frames them.
            worker = _Worker(process, parent)
            os.set_blocking(worker.fd, False)
            self._loop.add_reader(worker.fd, self._readable, worker)
            self.workers.append(worker)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the least busy worker (``fn`` and ``args`` must pickle).

        The workers start after ``start_after`` calls and take calls once they have imported
        ``preload``; until then calls run inline. A small crawl never waits for a worker to
        start, nor pays for one."""
        self.calls += 1
        if self.processes <= 0 or self.broken or self.calls <= self.start_after:
            return fn(*args)
        if not self.workers:
            self._start()
        ready = [w for w in self.workers if w.ready]
        if not ready:
            return fn(*args)
        worker = min(ready, key=lambda w: len(w.pending))
        task_id = next(self._ids)
        payload = pickle.dumps((task_id, fn, args), pickle.HIGHEST_PROTOCOL)
        future = asyncio.get_running_loop().create_future()
        worker.pending[task_id] = future
        worker.outgoing += _HEADER.pack(len(payload)) + payload
        self._write(worker)
        return await future

    def _write(self, worker: _Worker) -> None:
        assert self._loop is not None
        try:
            written = os.write(worker.fd, worker.outgoing)
        except BlockingIOError:
            written = 0
        except OSError:
            self._lost(worker)
            return
        del worker.outgoing[:written]
        if worker.outgoing:
            self._loop.add_writer(worker.fd, self._write, worker)
        else:
            self._loop.remove_writer(worker.fd)

    def _readable(self, worker: _Worker) -> None:
        try:
            data = os.read(worker.fd, _READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._lost(worker)
            return
        worker.incoming += data
        while len(worker.incoming) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(worker.incoming)
            if len(worker.incoming) < _HEADER.size + size:
                break
            payload = bytes(worker.incoming[_HEADER.size:_HEADER.size + size])
            del worker.incoming[:_HEADER.size + size]
            task_id, ok, value = pickle.loads(payload)
            if task_id == READY:
                worker.ready = True
                continue
            future = worker.pending.pop(task_id, None)
            if future is None or future.done():
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    def _lost(self, worker: _Worker) -> None:
        logger.warning("a page worker process ended (exit code %s); extracting in the crawl's "
                       "own process from now on", worker.process.exitcode)
        self.broken = True
        self._detach(worker)
        for future in worker.pending.values():
            if not future.done():
                future.set_exception(WorkerDied("the page worker process ended"))
        worker.pending.clear()

    def _detach(self, worker: _Worker) -> None:
        if self._loop is not None and worker in self.workers:
            self._loop.remove_reader(worker.fd)
            self._loop.remove_writer(worker.fd)
            self.workers.remove(worker)
        worker.conn.close()

    async def started(self, timeout: float = 60) -> None:
        """Start the workers now and wait until every one takes calls."""
        if not self.workers:
            self._start()
        deadline = asyncio.get_running_loop().time() + timeout
        while not all(w.ready for w in self.workers):
            if self.broken or asyncio.get_running_loop().time() > deadline:
                raise WorkerDied("the page workers did not start")
            await asyncio.sleep(0.05)

    def close(self) -> None:
        """Stop the workers: closing their pipes ends their loops. Pages still out (a crawl
        stopped mid-way) are cancelled rather than left waiting forever."""
        for worker in list(self.workers):
            for future in worker.pending.values():
                future.cancel()
            worker.pending.clear()
            self._detach(worker)
            worker.process.join(timeout=5)
            if worker.process.is_alive():
                worker.process.terminate()
