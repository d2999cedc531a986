"""The API under load on loopback: many concurrent streaming clients over several adapters for a
bounded time, with clients that hang up mid-stream. No errors, no cross-talk, flat memory."""

from __future__ import annotations

import os
import threading
import time

import httpx
import openai
import psutil
import pytest

from serving.engine import BASE_ONLY, ChatEngine
from tests.serving.conftest import KEY

CLIENTS = 20
# 30 s in the suite to keep CI short; LORAFORGE_LOAD_SECONDS=60 is the full minute.
SECONDS = float(os.environ.get("LORAFORGE_LOAD_SECONDS", "30"))
QUESTIONS = ["What is a low-rank adapter?", "What is glaucoma?", "Why?",
             "How do I treat a cold at home, and when should I see a doctor?"]
MODELS = {"tiny-chat": BASE_ONLY, "alpha:v1": "alpha:v1", "beta:v1": "beta:v1"}


def test_twenty_clients_for_a_minute_get_their_own_replies_and_memory_stays_flat(api):
    engine, url = api
    budget = 12
    expected = {(m, q): engine.generate(choice, [{"role": "user", "content": q}],
                                        max_new_tokens=budget)
                for m, choice in MODELS.items() for q in QUESTIONS}
    process = psutil.Process()
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
    print(f"resident MiB over the run: {', '.join(f'{m:.0f}' for m in mib)}")
    assert growth < 48, f"resident memory grew {growth:.0f} MiB after warm-up: {mib}"


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
