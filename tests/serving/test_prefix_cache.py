"""Prompts that start like an earlier one reuse its keys and values: a chat's next turn computes
only what is new, and replies are the ones a full prefill gives."""

from __future__ import annotations

import torch

from serving.engine import BASE_ONLY, ChatEngine
from serving.prefix_cache import MIN_REUSE_TOKENS, PrefixCache
from tests.serving.test_batching import _ask, _concurrently


def _turns(engine: ChatEngine, choice: str, questions: list[str]) -> list[str]:
    """A conversation: each question asked with the earlier questions and replies before it."""
    chat: list[dict[str, str]] = []
    replies = []
    for question in questions:
        chat.append({"role": "user", "content": question})
        replies.append(engine.generate(choice, chat, max_new_tokens=16))
        chat.append({"role": "assistant", "content": replies[-1]})
    return replies


def test_a_follow_up_turn_computes_only_what_is_new_and_answers_as_a_full_prefill(chat_store):
    cached = ChatEngine(base="tiny-chat", device="cpu")
    plain = ChatEngine(base="tiny-chat", device="cpu", prefix_cache_mb=0)
    questions = ["What is glaucoma?", "Is it safe?", "What does rank mean here?"]

    replies = _turns(cached, "alpha:v1", questions)

    assert replies == _turns(plain, "alpha:v1", questions)
    assert plain.prefixes is None
    assert cached.prefixes.hits == 2  # the second and third turns
    first_prompt = len(cached._prompt_ids(_ask(questions[0]), 16))
    assert cached.prefixes.reused_tokens > 2 * first_prompt


def test_rows_with_and_without_a_stored_prefix_decode_together_exactly(chat_store):
    cached = ChatEngine(base="tiny-chat", device="cpu", gather_seconds=0.5)
    plain = ChatEngine(base="tiny-chat", device="cpu", prefix_cache_mb=0)
    follow_up = [{"role": "user", "content": "What is glaucoma?"}]
    follow_up += [{"role": "assistant",
                   "content": cached.generate("beta:v1", follow_up, max_new_tokens=12)},
                  {"role": "user", "content": "Why?"}]
    hits = cached.prefixes.hits
    jobs = [("beta:v1", follow_up, 10), ("alpha:v1", _ask("Is it safe?"), 14),
            (BASE_ONLY, _ask("What is a low-rank adapter?"), 8), ("beta:v1", follow_up, 6)]
    together = _concurrently(cached, jobs)

    assert cached.prefixes.hits == hits + 2
    assert cached.largest_batch >= 3
    assert together == [plain.generate(c, m, max_new_tokens=n) for c, m, n in jobs]


def _kv(tokens: int, layers: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(torch.full((2, tokens, 4), float(i)), torch.full((2, tokens, 4), -float(i)))
            for i in range(layers)]


def test_the_store_keeps_the_longest_prefix_per_adapter_within_its_bytes():
    one = 2 * 2 * 4 * 4 * 2  # bytes per token: 2 layers, keys and values, 2 heads x 4 floats
    cache = PrefixCache(max_bytes=40 * one)
    prompt = list(range(20))
    cache.store("a", prompt, _kv(20))
    cache.store("a", prompt + [99, 98, 97], _kv(23))  # the same chat, one turn on

    assert len(cache) == 1 and cache.nbytes == 23 * one
    reused, layers = cache.lookup("a", prompt + [99, 98, 5, 6])
    assert reused == 22 and layers[1][0].shape == (2, 22, 4)
    assert torch.equal(layers[1][1], torch.full((2, 22, 4), -1.0))
    assert cache.lookup("b", prompt + [99]) is None  # another adapter's keys never serve
    # the whole stored prompt again: all but its last token, whose logits give the reply
    assert cache.lookup("a", prompt[:MIN_REUSE_TOKENS + 1])[0] == MIN_REUSE_TOKENS
    assert cache.lookup("a", prompt[:MIN_REUSE_TOKENS]) is None  # too short to be worth it
    assert cache.lookup("a", [7] + prompt) is None

    cache.store("b", list(range(100, 120)), _kv(20))  # over the bound: the oldest goes
    assert cache.nbytes <= 40 * one and cache.lookup("a", prompt) is None
    assert cache.lookup("b", list(range(100, 130)))[0] == 20


def test_the_store_holds_at_most_its_number_of_entries():
    cache = PrefixCache(max_bytes=1 << 30, max_entries=3)
    for first in range(5):
        cache.store("a", [first] + list(range(100, 110)), _kv(11))
    assert len(cache) == 3
    assert cache.lookup("a", [1] + list(range(100, 111))) is None  # among the oldest: gone
    assert cache.lookup("a", [4] + list(range(100, 111)))[0] == 11
