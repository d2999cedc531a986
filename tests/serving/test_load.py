"""The API under load on loopback: many concurrent streaming clients over several adapters for a
bounded time, with clients that hang up mid-stream. No errors, no cross-talk, flat memory."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import psutil
import pytest

from serving.engine import BASE_ONLY, ChatEngine
from tests.serving.conftest import KEY
from tests.ui.conftest import free_port

CLIENTS = 20
# 30 s in the suite to keep CI short; LORAFORGE_LOAD_SECONDS=60 is the full minute.
SECONDS = float(os.environ.get("LORAFORGE_LOAD_SECONDS", "30"))
QUESTIONS = ["What is a low-rank adapter?", "What is glaucoma?", "Why?",
             "How do I treat a cold at home, and when should I see a doctor?"]
MODELS = {"tiny-chat": BASE_ONLY, "alpha:v1": "alpha:v1", "beta:v1": "beta:v1"}


@pytest.fixture
def server(engine: ChatEngine, tmp_path: Path) -> Iterator[tuple[psutil.Process, str]]:
    """``loraforge serve`` on the test store in a process of its own, as a user runs it:
    (the process, its base URL). Its memory is the server's alone, not that of a test worker
    that has run many other tests (whose freed and re-touched pages once moved its resident
    size by 60 MiB during this test)."""
    port = free_port()
    env = {**os.environ, "LORAFORGE_API_KEY": KEY}
    log = tmp_path / "serve.log"  # a file, not a pipe: a full pipe would stall the server
    with open(log, "w") as output:
        child = subprocess.Popen([sys.executable, "-m", "loraforge", "serve", "--base",
                                  engine.base_name, "--port", str(port)], env=env,
                                 stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert child.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, "loraforge serve did not start in 120 s"
            try:
                if httpx.get(f"{url}/models", headers={"Authorization": f"Bearer {KEY}"},
                             timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        yield psutil.Process(child.pid), url
    finally:
        child.terminate()
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def test_twenty_clients_for_a_minute_get_their_own_replies_and_memory_stays_flat(
        engine: ChatEngine, server: tuple[psutil.Process, str]):
    process, url = server
    budget = 12
    # The same code and thread count as the server's, so the same greedy replies.
    expected = {(m, q): engine.generate(choice, [{"role": "user", "content": q}],
                                        max_new_tokens=budget)
                for m, choice in MODELS.items() for q in QUESTIONS}
    errors: list[str] = []
    wrong: list[tuple[str, str, str]] = []
    served = [0] * CLIENTS
    memory: list[int] = []
    stop = time.monotonic() + SECONDS

    def client(index: int) -> None:
        ai = openai.OpenAI(base_url=url, api_key=KEY, max_retries=0, timeout=60)
        turn = 0
        while time.monotonic() < stop:
            model = list(MODELS)[(index + turn) % len(MODELS)]
            question = QUESTIONS[(index * 7 + turn) % len(QUESTIONS)]
            turn += 1
            try:
                if index % 5 == 4 and turn % 2:  # hangs up after the first piece
                    with httpx.stream("POST", f"{url}/chat/completions", timeout=60,
                                      headers={"Authorization": f"Bearer {KEY}"},
                                      json={"model": model, "stream": True, "max_tokens": 200,
                                            "messages": [{"role": "user",
                                                          "content": question}]}) as reply:
                        next(reply.iter_lines())
                    continue
                text = "".join(c.choices[0].delta.content or "" for c in
                               ai.chat.completions.create(
                                   model=model, stream=True, temperature=0, max_tokens=budget,
                                   messages=[{"role": "user", "content": question}]))
            except Exception as exc:  # noqa: BLE001 (every error is a failure, listed below)
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            served[index] += 1
            if text != expected[(model, question)]:
                wrong.append((model, question, text))

    def sample_memory() -> None:
        while time.monotonic() < stop:
            memory.append(process.memory_info().rss)
            time.sleep(0.5)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    threads.append(threading.Thread(target=sample_memory))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=SECONDS + 120)

    assert errors == []
    assert wrong == []
    assert min(served) >= 2, served
    # The first quarter is warm-up (threads' allocator arenas, first batches of each size);
    # a leak shows as growth from the second quarter to the last.
    quarter = max(1, len(memory) // 4)
    second, last = memory[quarter:2 * quarter], memory[-quarter:]
    mib = [m / 2**20 for m in memory[::max(1, len(memory) // 8)]]
    growth = (sum(last) / len(last) - sum(second) / len(second)) / 2**20
    print(f"resident MiB over the run: {', '.join(f'{m:.0f}' for m in mib)}; "
          f"growth {growth:.1f} MiB")
    # The server alone grew about 2 MiB here; keeping 4 copies of each reply's keys and values
    # (a leak of about 120 KiB a request on this tiny model) grew it by 33 MiB.
    assert growth < 24, f"resident memory grew {growth:.0f} MiB after warm-up: {mib}"


def test_a_client_that_hangs_up_mid_stream_frees_its_row(api):
    engine: ChatEngine = api[0]
    url = api[1]
    question = [{"role": "user", "content": QUESTIONS[0]}]
    before = engine.tokens_decoded
    engine.generate("alpha:v1", question, max_new_tokens=150)
    full = engine.tokens_decoded - before
    assert full > 75, "the reply must be long for this test to mean anything"

    before = engine.tokens_decoded
    with httpx.stream("POST", f"{url}/chat/completions", timeout=60,
                      headers={"Authorization": f"Bearer {KEY}"},
                      json={"model": "alpha:v1", "stream": True, "max_tokens": 150,
                            "messages": question}) as reply:
        assert reply.status_code == 200
        next(reply.iter_lines())
    deadline = time.monotonic() + 30
    while engine.running_rows and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.running_rows == 0
    assert engine.tokens_decoded - before < full // 2


@pytest.fixture(autouse=True)
def _quiet_client_logs(caplog):
    caplog.set_level("WARNING", logger="httpx")
