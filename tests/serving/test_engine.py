"""The engine on its own: one resident base, adapters switched in place, safetensors only."""

from __future__ import annotations

import pytest

from serving.engine import BASE_ONLY, ChatEngine, ChatError
from tests.ui.conftest import register_adapter

QUESTION = [{"role": "user", "content": "What is a low-rank adapter?"}]


def test_choices_list_base_only_then_the_adapters_read_fresh(engine: ChatEngine, chat_store):
    assert engine.list_choices() == [BASE_ONLY, "alpha:v1", "beta:v1"]
    register_adapter("gamma", chat_store.adapter_b)
    assert "gamma:v1" in engine.list_choices()


def test_adapters_change_greedy_replies_without_reloading_the_base(engine: ChatEngine):
    base = engine.generate(None, QUESTION, max_new_tokens=12)
    alpha = engine.generate("alpha:v1", QUESTION, max_new_tokens=12)
    beta = engine.generate("beta:v1", QUESTION, max_new_tokens=12)
    assert base and alpha and beta
    assert alpha != base and beta != alpha
    # Switching back gives the same replies: nothing leaks between adapters.
    assert engine.generate(BASE_ONLY, QUESTION, max_new_tokens=12) == base
    assert engine.generate("alpha:v1", QUESTION, max_new_tokens=12) == alpha
    assert engine.base_loads == 1


def test_pickle_only_adapter_is_refused_with_advice(engine: ChatEngine, chat_store):
    register_adapter("pickled", chat_store.adapter_pickle)
    with pytest.raises(ChatError, match="only pickle weights .adapter_model.bin.*only safetensors"):
        engine.generate("pickled:v1", QUESTION, max_new_tokens=4)
    assert engine.base_loads == 0  # refused before anything was loaded


def test_unknown_adapter_and_unknown_base_are_clear_errors(engine: ChatEngine, chat_store):
    with pytest.raises(ChatError, match="unknown adapter 'nope:v1'"):
        engine.generate("nope:v1", QUESTION)
    with pytest.raises(ChatError, match="unknown base model 'missing'"):
        ChatEngine(base="missing")


def test_long_history_is_trimmed_to_fit_the_context(engine: ChatEngine):
    turn = "The quick brown fox jumps over the lazy dog. " * 3
    history = []
    for _ in range(12):
        history += [{"role": "user", "content": turn}, {"role": "assistant", "content": turn}]
    reply = engine.generate("alpha:v1", [*history, *QUESTION], max_new_tokens=8)
    assert isinstance(reply, str)


def test_stream_yields_growing_text_that_ends_as_the_whole_reply(engine: ChatEngine):
    whole = engine.generate("beta:v1", QUESTION, max_new_tokens=12)
    pieces = list(engine.stream("beta:v1", QUESTION, max_new_tokens=12))
    assert len(pieces) > 1 and pieces[-1] == whole
    assert list(engine.stream(BASE_ONLY, QUESTION, max_new_tokens=12))[-1] == engine.generate(
        None, QUESTION, max_new_tokens=12
    )


def test_stream_errors_reach_the_caller(engine: ChatEngine):
    with pytest.raises(ChatError, match="unknown adapter"):
        list(engine.stream("nope:v1", QUESTION))
    too_long = [{"role": "user", "content": "fox " * 400}]
    with pytest.raises(ChatError, match="too long"):
        list(engine.stream("alpha:v1", too_long, max_new_tokens=8))
    assert list(engine.stream("alpha:v1", QUESTION, max_new_tokens=4))  # the lock was released


def test_lru_drops_the_least_recently_used_adapter_and_never_the_base(chat_store):
    engine = ChatEngine(base="tiny-chat", device="cpu", max_adapters=1)
    alpha = engine.generate("alpha:v1", QUESTION, max_new_tokens=8)
    beta = engine.generate("beta:v1", QUESTION, max_new_tokens=8)
    assert engine.loaded_adapters == ["beta:v1"]
    assert engine.generate("alpha:v1", QUESTION, max_new_tokens=8) == alpha
    assert engine.generate("beta:v1", QUESTION, max_new_tokens=8) == beta
    assert (engine.adapter_loads, engine.base_loads) == (4, 1)


def test_grouped_choices_list_other_bases_after_the_served_one(engine: ChatEngine):
    assert engine.grouped_choices()[:2] == [
        (f"tiny-chat › {BASE_ONLY}", BASE_ONLY), ("tiny-chat › alpha:v1", "alpha:v1")
    ]


def test_four_bit_needs_cuda(chat_store):
    with pytest.raises(ChatError, match="needs a CUDA GPU"):
        ChatEngine(base="tiny-chat", device="cpu", load_in_4bit=True)
