"""Work handed to other processes: page workers over pipes and the store's writer process."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from crawlers.extract import extract_page
from crawlers.offload import Offload, PageWorkers, WorkerDied, process_count

PAGE = """<html lang="en"><body><main><h1>Flu</h1>
<h2>What is the flu?</h2><p>An infection of the nose and throat.</p>
<h2>Who gets it?</h2><p>Anyone, each year.</p></main></body></html>"""


def test_workers_start_after_their_first_calls_and_take_calls_once_ready() -> None:
    async def scenario() -> None:
        workers = PageWorkers(1, start_after=3, preload=("crawlers.extract",))
        try:
            assert [await workers.run(os.getpid) for _ in range(3)] == [os.getpid()] * 3
            assert not workers.workers  # not started before its 4th call
            await workers.run(os.getpid)
            await workers.started()
            assert await workers.run(os.getpid) == workers.workers[0].process.pid
        finally:
            workers.close()

    asyncio.run(scenario())


def test_process_count_reads_numbers_and_auto_and_refuses_the_rest() -> None:
    assert process_count("0") == 0 and process_count(3) == 3
    assert 1 <= process_count("auto") <= 4 and process_count(None) == process_count("auto")
    for bad in ("-1", "two"):
        with pytest.raises(ValueError, match="process count"):
            process_count(bad)


def test_page_workers_return_what_inline_extraction_returns_and_pass_errors_on() -> None:
    async def scenario() -> None:
        workers = PageWorkers(2)
        try:
            await workers.started()
            pages = await asyncio.gather(*(workers.run(extract_page, PAGE, f"http://x.test/{i}")
                                           for i in range(20)))
            assert len(workers.workers) == 2
            assert pages == [extract_page(PAGE, f"http://x.test/{i}") for i in range(20)]
            with pytest.raises(ValueError, match="invalid literal"):
                await workers.run(int, "not a number")
            big = "x" * 3_000_000  # larger than a pipe's buffer both ways
            assert await workers.run(str.upper, big) == big.upper()
        finally:
            workers.close()
        assert not workers.workers

    asyncio.run(scenario())


def test_a_killed_worker_fails_its_pages_and_extraction_goes_on_inline() -> None:
    async def scenario() -> None:
        workers = PageWorkers(1)
        try:
            await workers.started()
            assert await workers.run(len, "warm") == 4
            process = workers.workers[0].process
            stuck = asyncio.ensure_future(workers.run(__import__("time").sleep, 30))
            await asyncio.sleep(0.5)
            os.kill(process.pid, signal.SIGKILL)
            with pytest.raises(WorkerDied):
                await asyncio.wait_for(stuck, 20)
            assert workers.broken and not workers.workers
            assert await workers.run(extract_page, PAGE, "http://x.test/") == \
                extract_page(PAGE, "http://x.test/")
        finally:
            workers.close()

    asyncio.run(scenario())


def test_the_writer_runs_calls_in_order_in_another_process_or_inline() -> None:
    writer = Offload(1)
    try:
        futures = [writer.submit(os.getpid) for _ in range(3)]
        assert {f.result(timeout=60) for f in futures} != {os.getpid()}
        assert writer.submit(pow, 2, 10).result(timeout=60) == 1024
    finally:
        writer.close()
    inline = Offload(0).submit(int, "x")
    assert inline.done() and isinstance(inline.exception(), ValueError)


CHILD = """
import asyncio, os, sys, time
from crawlers.offload import Offload, PageWorkers

async def main():
    pages = PageWorkers(1)
    await pages.started()
    writer = Offload(1)
    print(pages.workers[0].process.pid, writer.submit(os.getpid).result(), flush=True)
    time.sleep(600)

if __name__ == "__main__":
    asyncio.run(main())
"""


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as status:  # a zombie has exited, only unreaped
            return any(line.split()[1:2] == ["Z"] for line in status if line.startswith("State"))
    except FileNotFoundError:
        return True


def test_workers_exit_when_the_crawl_is_killed(tmp_path) -> None:
    import subprocess
    import sys
    import time
    from pathlib import Path

    script = tmp_path / "crawl_like.py"
    script.write_text(CHILD)
    root = Path(__file__).resolve().parents[2]
    child = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                             cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
    try:
        pids = [int(p) for p in child.stdout.readline().split()]
        assert len(pids) == 2 and child.pid not in pids
        child.kill()
        child.wait(timeout=30)
        deadline = time.monotonic() + 30
        while not all(_gone(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert all(_gone(pid) for pid in pids), "a worker outlived the crawl that started it"
    finally:
        child.kill()
