"""The one way long jobs run: a ``loraforge`` child process that reports as it goes.

Crawls, snapshot builds, trainings, comparisons and evaluations run in a child process, so a
crash cannot take the chat server or the demo down, and the child writes to the store exactly
as the CLI does. The child reports on a pipe of its own (never mixed with its log), one JSON
object per line:

- ``{"event": "progress", "step": 12, "total": 30, "loss": 2.31, "eta_s": 40.0}`` while it works;
- ``{"event": "result", "status": "succeeded", "run_id": 7, "adapter": "x:v1", ...}`` once, at
  the end (``status`` "failed" with ``error`` when it fails).

So a caller knows which run is *its* run, and why it failed, without guessing from the
database or parsing log lines. Commands are argv lists; no shell ever sees user input.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EVENTS_FD_ENV = "LORAFORGE_EVENTS_FD"
LOG_TAIL_LINES = 40


# --- the child's side -----------------------------------------------------------------------

def _own_events_fd() -> int | None:
    """The events pipe this process was given, taken out of the environment at import so that
    no grandchild inherits the number (in a grandchild it could be any file, such as the
    SQLite store, and a JSON line written there would corrupt it)."""
    value = os.environ.pop(EVENTS_FD_ENV, None)
    try:
        fd = int(value) if value else None
        return fd if fd is not None and stat.S_ISFIFO(os.fstat(fd).st_mode) else None
    except (ValueError, OSError):
        return None


_EVENTS_FD = _own_events_fd()


def reporting() -> bool:
    """Whether this process was started as a job (its events are read by someone)."""
    return _EVENTS_FD is not None


def emit(event: str, **data: Any) -> None:
    """Send one event to the parent job, if there is one; a no-op for a plain CLI run."""
    if _EVENTS_FD is None:
        return
    line = json.dumps({"event": event, **data}, default=str) + "\n"
    try:
        os.write(_EVENTS_FD, line.encode("utf-8"))
    except OSError:  # the parent went away; the job itself goes on (and records its result)
        pass


def emit_result(status: str = "succeeded", **data: Any) -> None:
    emit("result", status=status, **data)


# --- the parent's side ----------------------------------------------------------------------

def loraforge_argv(*args: str) -> list[str]:
    """The argv that runs ``loraforge ARGS`` with this interpreter, whatever PATH says."""
    return [sys.executable, "-m", "loraforge", *args]


@dataclass(frozen=True)
class JobResult:
    """How a job ended: what its ``result`` event said, or (without one) what its exit says."""

    status: str  # succeeded | failed | cancelled
    exit_code: int
    error: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"


@dataclass(frozen=True)
class JobUpdate:
    """The log so far (its last lines), the latest progress event, and at the end the result."""

    log: str
    progress: dict[str, Any] | None = None
    result: JobResult | None = None


def progress_text(event: dict[str, Any] | None) -> str:
    """"step 12/30 · loss 2.3100 · about 40 s left" from a progress event."""
    if not event:
        return "starting…"
    parts = [f"step {event.get('step')}/{event.get('total')}"]
    if event.get("loss") is not None:
        parts.append(f"loss {event['loss']:.4f}")
    if event.get("eta_s") is not None:
        parts.append(f"about {event['eta_s']:.0f} s left")
    return " · ".join(parts)


def _last_error(lines: list[str]) -> str | None:
    errors = [line for line in lines if line.startswith("error: ")]
    return errors[-1].removeprefix("error: ") if errors else (lines[-1] if lines else None)


class Job:
    """A started ``loraforge`` child. Iterate ``updates()`` to follow it; ``cancel()`` stops it."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None,
                 log_file: Path | None = None, cwd: Path | None = None) -> None:
        self.log_file = log_file  # every line of the child's output, when given
        read_end, write_end = os.pipe()
        child_env = {**os.environ, "PYTHONUNBUFFERED": "1", "NO_COLOR": "1", "COLUMNS": "100",
                     **(env or {}), EVENTS_FD_ENV: str(write_end)}
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.cancelled = False
        try:
            self.process = subprocess.Popen(  # noqa: S603 - argv list, never a shell
                argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                env=child_env, errors="replace", pass_fds=(write_end,), cwd=cwd)
        finally:
            os.close(write_end)  # the child holds it now; EOF comes when the child exits
        threading.Thread(target=self._read_log, daemon=True).start()
        threading.Thread(target=self._read_events, args=(read_end,), daemon=True).start()

    def _read_log(self) -> None:
        assert self.process.stdout is not None
        with open(self.log_file or os.devnull, "w", encoding="utf-8") as log:
            # Text mode reads "\r" as a line end too, so each progress-bar redraw is a line.
            for line in self.process.stdout:
                log.write(line if line.endswith("\n") else line + "\n")
                if line.strip():
                    self._queue.put(("line", line.rstrip()))
        self._queue.put(("log-closed", None))

    def _read_events(self, read_end: int) -> None:
        with os.fdopen(read_end, "r", encoding="utf-8", errors="replace") as events:
            for line in events:
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(event, dict):
                    self._queue.put(("event", event))
        self._queue.put(("events-closed", None))

    def cancel(self) -> None:
        """Stop the child as Ctrl-C would (it saves what it can), then for good."""
        self.cancelled = True
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def updates(self) -> Iterator[JobUpdate]:
        """An update after every log line and event, the last one carrying the result. If the
        caller stops iterating (a closed page, a cancel), the child is stopped too."""
        lines: list[str] = []
        progress: dict[str, Any] | None = None
        result_event: dict[str, Any] | None = None
        open_streams = 2
        try:
            while open_streams:
                kind, item = self._queue.get()
                if kind.endswith("-closed"):
                    open_streams -= 1
                    continue
                if kind == "line":
                    lines = [*lines[-(LOG_TAIL_LINES - 1):], item]
                elif item.get("event") == "progress":
                    progress = item
                elif item.get("event") == "result":
                    result_event = item
                yield JobUpdate("\n".join(lines), progress)
            exit_code = self.process.wait()
        finally:
            if self.process.poll() is None:
                self.cancel()
        yield JobUpdate("\n".join(lines), progress,
                        self._result(exit_code, result_event, lines))

    def _result(self, exit_code: int, event: dict[str, Any] | None,
                lines: list[str]) -> JobResult:
        data = {k: v for k, v in (event or {}).items() if k not in ("event", "status", "error")}
        if self.cancelled:
            return JobResult("cancelled", exit_code, "stopped on request", data)
        if event is not None and exit_code == 0:
            return JobResult(event.get("status", "succeeded"), exit_code, event.get("error"), data)
        if exit_code == 0:
            return JobResult("succeeded", 0, None, data)
        error = (event or {}).get("error") or _last_error(lines) or f"exit {exit_code}"
        return JobResult("failed", exit_code, error, data)

    def wait(self) -> JobResult:
        """Follow the job to its end and return the result (the log is discarded)."""
        *_, last = self.updates()
        assert last.result is not None
        return last.result


def run_job(args: list[str], env: dict[str, str] | None = None,
            log_file: Path | None = None) -> JobResult:
    """Run ``loraforge ARGS`` to its end; the structured result, whatever happened."""
    return Job(loraforge_argv(*args), env, log_file).wait()
