"""Batching for the chat engine: concurrent requests, each on its own adapter, decoded together.

Design (documented in docs/ui.md): requests wait in one queue. A scheduler thread takes the
oldest request and every waiting request that can share its batch, and the engine decodes them
in one ``generate`` call, with PEFT's ``adapter_names`` giving each row its own LoRA adapter
(``"__base__"`` for the bare base). Requests that arrive while a batch runs join the **next
batch**, not the running one. Each row streams its own tokens as they come and stops on its own
end-of-sequence, its own token budget, or its client going away; the batch ends when every row
has stopped.

A row may share a batch with the oldest request when both decode the same way (greedy, or the
same temperature and top-p) and either both are mixable (plain LoRA or the base) or both use
the same adapter. DoRA and other non-LoRA adapters cannot be mixed per row, so they are served in
batches of their own adapter; a masked-diffusion base answers one request at a time.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
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


def select_batch(pending: list[ChatRequest], max_rows: int, max_adapters: int
                 ) -> list[ChatRequest]:
    """Take the oldest request and the waiting ones that can share its batch, oldest first,
    with at most ``max_adapters`` distinct adapters, so none of them is evicted mid-batch."""
    head = pending[0]
    batch: list[ChatRequest] = []
    adapters: set[str] = set()
    for request in pending:
        if len(batch) == max_rows:
            break
        if request.sampling != head.sampling:
            continue
        if head.mixable and request.mixable:
            if request.label is not None and request.label not in adapters:
                if len(adapters) == max_adapters:
                    continue
                adapters.add(request.label)
        elif request.label != head.label:
            continue
        batch.append(request)
    for request in batch:
        pending.remove(request)
    return batch


class RowStreamer:
    """transformers' streamer and per-row stopping criterion for one batch.

    ``generate`` hands over the prompt first, then one new token per row each step. A row
    ends at its first end-of-sequence token, at its own token budget, or when its caller
    cancels; its tokens after that (padding) are dropped, and ``generate`` stops once every
    row has ended.
    """

    def __init__(self, rows: list[ChatRequest], eos_ids: set[int]) -> None:
        self.rows = rows
        self.eos_ids = eos_ids
        self.done = [False] * len(rows)
        self._prompt_seen = False

    def put(self, value: Any) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        for i, token in enumerate(value.reshape(-1).tolist()):
            if self.done[i]:
                continue
            row = self.rows[i]
            if row.cancelled.is_set():
                self.done[i] = True
                continue
            row.ids.append(int(token))
            row.chunks.put([int(token)])
            if token in self.eos_ids or len(row.ids) >= row.max_new_tokens:
                self.done[i] = True

    def end(self) -> None:
        pass

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        for i, row in enumerate(self.rows):  # a client gone since the last token stops here
            self.done[i] = self.done[i] or row.cancelled.is_set()
        return torch.tensor(self.done, dtype=torch.bool, device=input_ids.device)


class BatchScheduler:
    """The queue of waiting requests and the thread that serves them batch by batch.

    ``run_batch`` decodes a batch and finishes each of its requests; whatever it raises fails
    the batch's unfinished requests with that error, and the thread goes on with the next.
    """

    def __init__(self, run_batch: Callable[[list[ChatRequest]], None], *, max_rows: int,
                 max_adapters: int, gather_seconds: float = 0.005) -> None:
        self._run_batch = run_batch
        self.max_rows = max_rows
        self.max_adapters = max_adapters
        # A short wait after an idle spell lets requests sent together start together.
        self.gather_seconds = gather_seconds
        self._pending: list[ChatRequest] = []
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self.batches = 0
        self.largest_batch = 0

    def submit(self, request: ChatRequest) -> None:
        with self._wake:
            self._pending.append(request)
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="loraforge-batches",
                                                daemon=True)
                self._thread.start()
            self._wake.notify()

    def _serve(self) -> None:
        while True:
            with self._wake:
                idle = not self._pending
                while not self._pending:
                    self._wake.wait()
            if idle and self.gather_seconds:
                time.sleep(self.gather_seconds)
            with self._wake:
                taken = select_batch(self._pending, self.max_rows, self.max_adapters)
            batch = []
            for request in taken:  # a client that left while waiting costs no decoding
                if request.cancelled.is_set():
                    request.finish(error=RuntimeError("cancelled before it was served"))
                else:
                    batch.append(request)
            if not batch:
                continue
            self.batches += 1
            self.largest_batch = max(self.largest_batch, len(batch))
            try:
                self._run_batch(batch)
            except BaseException as exc:  # reaches each caller as its own error
                logger.debug("batch of %d failed", len(batch), exc_info=True)
                for request in batch:
                    request.finish(error=exc)
            finally:
                for request in batch:  # a request the batch forgot must not hang its caller
                    request.finish(error=RuntimeError("the batch ended without this reply"))
