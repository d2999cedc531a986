"""Continuous batching for the chat engine: concurrent requests, each on its own adapter,
decoded together.

Design (documented in docs/ui.md): requests wait in one queue. One thread decodes. Between two
decode steps it admits waiting requests into the running batch (their prompts are prefilled
together and their KV cache is stacked onto the running one), so a request **joins at the next
decode step**, not after the running replies have ended. PEFT's ``adapter_names`` gives each row
its own LoRA adapter (``"__base__"`` for the bare base) in one forward pass. Each row streams its
own tokens and leaves on its own end-of-sequence, its own token budget, or its client going away
(then at the next step). Rows may sample with their own temperature and top-p.

Mixable rows (plain LoRA or the base) share a batch. DoRA and other non-LoRA adapters cannot be
mixed per row, so they are decoded in batches of their own adapter; a masked-diffusion base
answers one request at a time; a model whose KV cache cannot be stacked (sliding-window layers)
admits new rows only when the running ones have ended.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class ChatRequest:
    """One reply to produce. The scheduler thread fills ``prompt_ids``, ``ids`` and ``text``;
    the caller reads ``chunks`` until ``None`` and may set ``cancelled`` to give up."""

    label: str | None  # adapter label; None for the base alone
    chat: list[dict[str, str]]
    max_new_tokens: int
    temperature: float
    top_p: float
    mixable: bool = True  # may share a batch with rows on other adapters
    adapter: Any = None  # the engine's record of the adapter, for loading it
    prompt_ids: list[int] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    text: str | None = None
    error: BaseException | None = None
    chunks: queue.SimpleQueue[list[int] | None] = field(default_factory=queue.SimpleQueue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    finished: bool = False

    @property
    def sampling(self) -> tuple[float, float]:
        """How the row decodes; rows in one ``generate`` call must agree on it."""
        return (0.0, 1.0) if self.temperature <= 0 else (self.temperature, self.top_p)

    def finish(self, text: str | None = None, error: BaseException | None = None) -> None:
        """Hand the outcome to the caller once; later calls (a failing batch) are ignored."""
        if self.finished:
            return
        self.finished = True
        self.text, self.error = text, error
        self.chunks.put(None)


def select_joiners(pending: list[ChatRequest], running: list[ChatRequest], max_rows: int,
                   max_adapters: int) -> list[ChatRequest]:
    """Take the waiting requests that may join the running rows now, oldest first.

    The running rows (or, with none, the oldest request) set the group: mixable rows on at most
    ``max_adapters`` distinct adapters, so none is evicted mid-decode, or rows of one adapter
    that cannot be mixed. When the oldest waiting request does not fit the group, nothing joins
    until the running rows have ended, so it cannot be overtaken for ever.
    """
    if not pending:
        return []
    head = running[0] if running else pending[0]
    adapters = {r.label for r in running if r.label is not None}
    room = max_rows - len(running)
    taken: list[ChatRequest] = []
    for request in pending:
        if len(taken) == room:
            break
        if head.mixable and request.mixable:
            if request.label is not None and request.label not in adapters:
                if len(adapters) == max_adapters:
                    fits = False
                else:
                    adapters.add(request.label)
                    fits = True
            else:
                fits = True
        else:
            fits = request.label == head.label and request.mixable == head.mixable
        if not fits and request is pending[0]:
            return []
        if fits:
            taken.append(request)
    for request in taken:
        pending.remove(request)
    return taken


class ReplyStream:
    """An iterator over a reply's growing text that can be cancelled from another thread, e.g.
    by a server whose client hung up while a worker thread waits for the next token."""

    def __init__(self, request: ChatRequest, texts: Iterator[str]) -> None:
        self._request = request
        self._texts = texts

    def __iter__(self) -> ReplyStream:
        return self

    def __next__(self) -> str:
        return next(self._texts)

    def cancel(self) -> None:
        self._request.cancelled.set()

    def close(self) -> None:
        self.cancel()
        with contextlib.suppress(ValueError):  # running in another thread: cancel() suffices
            self._texts.close()


DECODE_THREAD = "loraforge-decode"  # the name of every scheduler's decode thread


def run_on_passing_thread(work: Callable[[], Any]) -> Any:
    """``work()`` on a new thread that ends when it returns; its result, or its exception.

    For model work a caller asks for outside the decode thread (loading, switching adapters).
    Torch's parallel ops give the thread that runs them a GNU OpenMP thread pool for as long as
    it lives, and with more pool threads than cores every parallel op waits asleep (see
    ``BatchScheduler``). A caller's thread lives on: one ``activate`` after a merged reply
    (reading 538 MB of weights back) left the main thread a pool that held SmolLM2's decode
    at about 11 tokens/s instead of 21 for the rest of the process."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:  # raised again on the caller's thread
            outcome["error"] = exc

    # A daemon, so that Ctrl-C during a long load ends the process instead of waiting for it.
    thread = threading.Thread(target=run, name="loraforge-work", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


class BatchScheduler:
    """The queue of waiting requests and the thread that decodes them, one step at a time.

    ``step(running, joiners)`` admits the joiners (or, with none, decodes one token for every
    running row), finishes the rows that ended and returns those still running. Whatever it
    raises fails every row it was given, and the thread goes on with the next requests.
    ``joinable()`` says whether rows may join while others run. ``on_idle()``, if given, runs
    once (on this thread) after the queue has been empty with no running rows for
    ``idle_seconds``: tidying that should not delay a request, nor run between close requests.

    The thread ends after ``linger_seconds`` more with nothing to do, and the next request
    starts another. A thread that has run torch's parallel ops keeps a GNU OpenMP thread pool
    until it ends. With more pool threads alive than cores, OpenMP stops spinning while it waits
    and every parallel op pays for a sleep and a wake-up: on 2 cores, an idle second engine in
    the same process (a benchmark's, a test's) cut the first one's decode speed from about 24 to
    about 11 tokens/s.
    """

    def __init__(self, step: Callable[[list[ChatRequest], list[ChatRequest]], list[ChatRequest]],
                 *, max_rows: int, max_adapters: int, gather_seconds: float = 0.005,
                 joinable: Callable[[], bool] = lambda: True,
                 on_idle: Callable[[], None] | None = None, idle_seconds: float = 0.5,
                 linger_seconds: float = 5.0) -> None:
        self._step = step
        self._joinable = joinable
        self._on_idle = on_idle
        self.idle_seconds = idle_seconds
        self.linger_seconds = linger_seconds
        self.max_rows = max_rows
        self.max_adapters = max_adapters
        self.gather_seconds = gather_seconds
        self._pending: list[ChatRequest] = []
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self.largest_batch = 0

    def submit(self, request: ChatRequest) -> None:
        with self._wake:
            self._pending.append(request)
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name=DECODE_THREAD,
                                                daemon=True)
                self._thread.start()
            self._wake.notify()

    def _gather(self) -> None:
        """After an idle spell, wait while requests keep coming (each within
        ``gather_seconds`` of the last, 20 waits at most), so a burst starts as one batch."""
        for _ in range(20):
            if len(self._pending) >= self.max_rows:
                return
            seen = len(self._pending)
            self._wake.wait(self.gather_seconds)
            if len(self._pending) == seen:
                return

    def _serve(self) -> None:
        running: list[ChatRequest] = []
        idle_done = True  # nothing to tidy before the first request
        while True:
            with self._wake:
                while not self._pending and not running:
                    tidied = idle_done or self._on_idle is None
                    timeout = self.linger_seconds if tidied else self.idle_seconds
                    if not self._wake.wait(timeout) and not self._pending:
                        if tidied:  # under the lock, so a submit now starts a new thread
                            self._thread = None
                            return
                        break
                if not self._pending and not running:  # idle for idle_seconds
                    idle_done = True
                    idle = True
                else:
                    idle_done = idle = False
            if idle:
                try:
                    self._on_idle()  # type: ignore[misc]
                except Exception:  # the next request reports what is wrong, if anything
                    logger.warning("tidying the idle engine failed", exc_info=True)
                continue
            with self._wake:
                if not running:
                    self._gather()
                joiners = []
                if not running or self._joinable():
                    joiners = select_joiners(self._pending, running, self.max_rows,
                                             self.max_adapters)
            for request in [r for r in joiners if r.cancelled.is_set()]:
                joiners.remove(request)  # a client that left while waiting costs nothing
                request.finish(error=RuntimeError("cancelled before it was served"))
            if not running and not joiners:
                continue
            self.largest_batch = max(self.largest_batch, len(running) + len(joiners))
            try:
                running = self._step(running, joiners)
            except BaseException as exc:  # reaches each caller as its own error
                logger.debug("decoding %d rows failed", len(running) + len(joiners),
                             exc_info=True)
                for request in running + joiners:
                    request.finish(error=exc)
                running = []
