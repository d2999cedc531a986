"""Long jobs (training, snapshot builds) run as ``loraforge`` subprocesses whose output we stream.

The UI never trains in-process: a run in its own process can't take the chat server down
with it, and it writes to the registry exactly as the CLI does. Commands are argv lists;
no shell ever sees user input.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

LOG_TAIL_LINES = 40


@dataclass
class JobUpdate:
    """The log so far (its last lines) and, once the process exits, its return code."""

    log: str
    returncode: int | None = None

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def loraforge_argv(*args: str) -> list[str]:
    """The argv that runs ``loraforge ARGS`` with this interpreter, whatever PATH says."""
    return [sys.executable, "-m", "loraforge", *args]


def stream_job(argv: list[str]) -> Iterator[JobUpdate]:
    """Run ``argv`` and yield the tail of its combined output after every line, then the exit."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "NO_COLOR": "1",
           "COLUMNS": "100"}
    lines: list[str] = []
    process = subprocess.Popen(  # noqa: S603 - argv list, never a shell
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, env=env,
        errors="replace",
    )
    assert process.stdout is not None
    try:
        # Text mode reads "\r" as a line end too, so each progress-bar redraw is a line.
        for line in process.stdout:
            line = line.rstrip()
            if not line:
                continue
            lines = [*lines[-(LOG_TAIL_LINES - 1):], line]
            yield JobUpdate("\n".join(lines))
        returncode = process.wait()
    finally:
        if process.poll() is None:  # the page went away mid-run: don't leave an orphan
            process.terminate()
            process.wait(timeout=30)
    yield JobUpdate("\n".join(lines), returncode)
