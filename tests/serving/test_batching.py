"""Concurrent requests decoded in shared batches: every greedy reply equals the same request
served alone, whatever its neighbours' adapters, lengths and budgets."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from serving.batching import BatchScheduler, ChatRequest, run_on_passing_thread, select_joiners
from serving.engine import BASE_ONLY, ChatEngine
from tests.ui.conftest import _build_adapter, register_adapter

QUESTIONS = [
    "What is a low-rank adapter?",
    "Why?",
    "How do adapters change the replies of a small language model on health questions?",
    "What is glaucoma?",
    "Tell me about the optic nerve and the pressure inside the eye, briefly please.",
    "Is it safe?",
    "What does rank mean here?",
    "Which adapter is this?",
]


def _ask(question: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}]


def _concurrently(engine: ChatEngine, jobs: list[tuple[str, str | list[dict[str, str]], int]],
                  *, stream_every: int = 2) -> list[str]:
    """Replies to (choice, question or whole chat, budget) jobs sent from one thread each, all
    at once; every ``stream_every``-th job streams instead of waiting for the whole reply."""
    replies: list[str | BaseException] = [""] * len(jobs)
    start = threading.Barrier(len(jobs))

    def run(i: int, choice: str, question: str | list[dict[str, str]], budget: int) -> None:
        chat = _ask(question) if isinstance(question, str) else question
        start.wait()
        try:
            if i % stream_every:
                replies[i] = engine.generate(choice, chat, max_new_tokens=budget)
            else:
                replies[i] = list(engine.stream(choice, chat, max_new_tokens=budget))[-1]
        except BaseException as exc:  # noqa: BLE001 (reported below)
            replies[i] = exc

    threads = [threading.Thread(target=run, args=(i, *job)) for i, job in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    failures = [r for r in replies if isinstance(r, BaseException)]
    assert not failures, failures
    return replies  # type: ignore[return-value]


@pytest.fixture
def three_adapters(chat_store, tmp_path: Path) -> list[str]:
    _build_adapter(chat_store.base, tmp_path / "adapter-c", seed=3)
    register_adapter("gamma", tmp_path / "adapter-c")
    return ["alpha:v1", "beta:v1", "gamma:v1"]


def test_mixed_adapter_batches_equal_each_request_served_alone(chat_store, three_adapters):
    # The wide gathering window makes the eight requests share one batch on a busy machine.
    engine = ChatEngine(base="tiny-chat", device="cpu", gather_seconds=0.5)
    choices = [*three_adapters, BASE_ONLY] * 2
    jobs = [(c, q, 6 + 3 * i) for i, (c, q) in enumerate(zip(choices, QUESTIONS, strict=True))]
    alone = [engine.generate(c, _ask(q), max_new_tokens=n) for c, q, n in jobs]
    assert engine.largest_batch == 1
    # the four models really answer differently, so equality below is not trivially true
    assert len({engine.generate(c, _ask(QUESTIONS[0]), max_new_tokens=12)
                for c in choices[:4]}) == 4

    together = _concurrently(engine, jobs)

    assert together == alone
    assert engine.largest_batch >= 6, f"not batched: largest batch {engine.largest_batch}"


def test_an_adapter_outside_the_lru_waits_for_the_next_batch_and_is_never_evicted_mid_batch(
        chat_store, three_adapters):
    engine = ChatEngine(base="tiny-chat", device="cpu", max_adapters=2, gather_seconds=0.5)
    jobs = [(c, q, 10) for c, q in zip([*three_adapters] * 2, QUESTIONS, strict=False)]
    alone = [engine.generate(c, _ask(q), max_new_tokens=n) for c, q, n in jobs]

    assert _concurrently(engine, jobs) == alone
    assert len(engine.loaded_adapters) <= 2


def test_dora_adapters_are_batched_apart_and_stay_exact(chat_store, tmp_path: Path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(4)
    model = AutoModelForCausalLM.from_pretrained(chat_store.base, use_safetensors=True)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], use_dora=True,
                        init_lora_weights=False, task_type="CAUSAL_LM")
    get_peft_model(model, config).save_pretrained(tmp_path / "dora")
    register_adapter("dora", tmp_path / "dora")

    engine = ChatEngine(base="tiny-chat", device="cpu", gather_seconds=0.5)
    jobs = [(c, q, 10) for c, q in zip(["dora:v1", "alpha:v1", BASE_ONLY, "dora:v1"],
                                        QUESTIONS, strict=False)]
    alone = [engine.generate(c, _ask(q), max_new_tokens=n) for c, q, n in jobs]

    assert _concurrently(engine, jobs) == alone
    assert alone[0] != engine.generate(BASE_ONLY, _ask(QUESTIONS[0]), max_new_tokens=10)


def test_a_stream_closed_early_stops_its_row_at_the_next_step(engine: ChatEngine):
    budget = 150
    whole = engine.generate("alpha:v1", _ask(QUESTIONS[0]), max_new_tokens=budget)
    before = engine.tokens_decoded
    engine.generate("alpha:v1", _ask(QUESTIONS[0]), max_new_tokens=budget)
    full = engine.tokens_decoded - before
    assert full > 75, "the reply must be long for this test to mean anything"

    before = engine.tokens_decoded
    pieces = engine.stream("alpha:v1", _ask(QUESTIONS[0]), max_new_tokens=budget)
    first = next(pieces)
    pieces.close()
    engine.generate(BASE_ONLY, _ask("Why?"), max_new_tokens=1)  # served after that batch ends
    assert whole.startswith(first)
    assert engine.tokens_decoded - before - 1 < full // 4


def _request(label: str | None, temperature: float = 0.0, mixable: bool = True) -> ChatRequest:
    return ChatRequest(label, [], 8, temperature, 1.0, mixable=mixable)


def test_joiners_keep_order_and_adapter_limits_and_the_oldest_is_never_overtaken():
    a, b, c, base = (_request("a"), _request("b"), _request("c"), _request(None))
    hot = _request("a", temperature=0.7)  # sampling rows mix with greedy ones
    dora, dora2 = _request("d", mixable=False), _request("d", mixable=False)

    pending = [a, hot, b, c, base, dora, dora2]
    assert select_joiners(pending, [], max_rows=8, max_adapters=2) == [a, hot, b, base]
    # c's adapter would be a third: it waits, and being oldest now, nothing overtakes it
    assert select_joiners(pending, [a, b], max_rows=8, max_adapters=2) == []
    assert select_joiners(pending, [], max_rows=8, max_adapters=2) == [c]
    # a DoRA adapter runs only with rows of itself, and not beside mixable ones
    assert select_joiners(pending, [c], max_rows=8, max_adapters=2) == []
    assert select_joiners(pending, [], max_rows=1, max_adapters=2) == [dora]
    assert select_joiners(pending, [dora], max_rows=8, max_adapters=2) == [dora2]
    assert pending == []


def test_the_decode_thread_tidies_then_ends_when_idle_and_the_next_request_starts_another():
    # An idle thread that keeps its OpenMP pool slows every other engine's decoding (see
    # BatchScheduler), so it must end; and a request after that must still be served.
    served: list[threading.Thread] = []
    tidied: list[threading.Thread] = []

    def step(running: list[ChatRequest], joiners: list[ChatRequest]) -> list[ChatRequest]:
        served.append(threading.current_thread())
        for request in joiners:
            request.finish(text="done")
        return []

    scheduler = BatchScheduler(step, max_rows=4, max_adapters=2,
                               on_idle=lambda: tidied.append(threading.current_thread()),
                               idle_seconds=0.05, linger_seconds=0.2)
    for turn in (1, 2):
        request = _request(None)
        scheduler.submit(request)
        assert request.chunks.get(timeout=10) is None and request.text == "done"
        served[-1].join(timeout=10)
        assert not served[-1].is_alive()
        assert len(served) == turn and tidied == served  # each thread tidied once, then ended
    assert served[0] is not served[1]


def test_work_on_a_passing_thread_returns_or_raises_on_the_caller_and_its_thread_ends():
    ran_on: list[threading.Thread] = []

    def work() -> int:
        ran_on.append(threading.current_thread())
        return 42

    def broken() -> None:
        ran_on.append(threading.current_thread())
        raise ValueError("no such adapter")

    assert run_on_passing_thread(work) == 42
    with pytest.raises(ValueError, match="no such adapter"):
        run_on_passing_thread(broken)
    assert threading.current_thread() not in ran_on
    assert not any(thread.is_alive() for thread in ran_on)


def test_engine_replies_equal_the_evaluation_path(engine: ChatEngine, chat_store):
    """The engine's own decode loop and transformers' generate (what `loraforge eval` uses)
    give the same greedy replies, with and without an adapter."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainers.generate import generate_answer

    tokenizer = AutoTokenizer.from_pretrained(chat_store.base)
    model = AutoModelForCausalLM.from_pretrained(chat_store.base, use_safetensors=True).eval()
    for question in QUESTIONS[:4]:
        assert engine.generate(BASE_ONLY, _ask(question), max_new_tokens=24) == \
            generate_answer(model, tokenizer, _ask(question), 24)
    model = PeftModel.from_pretrained(model, chat_store.adapter_a).eval()
    for question in QUESTIONS[:4]:
        assert engine.generate("alpha:v1", _ask(question), max_new_tokens=24) == \
            generate_answer(model, tokenizer, _ask(question), 24)
