"""A lone adapter folded into the base weights: the same replies, and the base's own weights
back bit for bit as soon as another adapter or the base needs them."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from registry.db import session_scope
from registry.models import Adapter, BaseModel
from serving.engine import BASE_ONLY, ChatEngine
from serving.errors import ChatError
from tests.serving.test_batching import _ask, _concurrently

LONG = 48  # new tokens: the merge needs some row to have at least 32 left


def _base_weights_as_stored(engine: ChatEngine, base: Path) -> None:
    """Every base weight in the model equals the file's: no merge left behind, no drift."""
    stored = load_file(base / "model.safetensors")
    model = engine.model.get_base_model() if hasattr(engine.model, "get_base_model") \
        else engine.model
    for name, module in model.named_modules():
        weight = getattr(module, "base_layer", module)
        key = f"{name}.weight"
        if type(weight) is torch.nn.Linear and key in stored:
            assert torch.equal(weight.weight, stored[key]), key


def test_a_lone_adapter_is_merged_and_answers_as_unmerged(chat_store):
    merging = ChatEngine(base="tiny-chat", device="cpu", unmerge_after_idle=600)
    plain = ChatEngine(base="tiny-chat", device="cpu", merge_lone_adapter=False)
    question = _ask("What is glaucoma?")

    replies = [merging.generate("alpha:v1", question, max_new_tokens=LONG) for _ in range(2)]

    assert merging.merges == 1  # the second reply found it merged still
    assert merging.merged_adapter == "alpha:v1"
    assert plain.merges == 0
    unmerged = plain.generate("alpha:v1", question, max_new_tokens=LONG)
    assert len(merging.tokenizer(unmerged)["input_ids"]) > 32  # decoded past the merge point
    assert replies == [unmerged, unmerged]
    # the adapter really changes the reply, so the equality above says something
    assert plain.generate(BASE_ONLY, question, max_new_tokens=LONG) != unmerged


def test_short_replies_are_not_worth_a_merge(chat_store):
    engine = ChatEngine(base="tiny-chat", device="cpu")
    engine.generate("alpha:v1", _ask("What is glaucoma?"), max_new_tokens=16)
    assert engine.merges == 0


def test_other_rows_after_a_merge_decode_through_the_base_weights_bit_for_bit(chat_store):
    merging = ChatEngine(base="tiny-chat", device="cpu", gather_seconds=0.5)
    plain = ChatEngine(base="tiny-chat", device="cpu", merge_lone_adapter=False,
                       gather_seconds=0.5)
    merging.generate("alpha:v1", _ask("What is glaucoma?"), max_new_tokens=LONG)
    assert merging.merges == 1

    jobs = [("alpha:v1", "Why?", 20), (BASE_ONLY, "What is a low-rank adapter?", 24),
            ("beta:v1", "Is it safe?", 12), (BASE_ONLY, "What is glaucoma?", 40)]
    together = _concurrently(merging, jobs)

    _base_weights_as_stored(merging, chat_store.base)
    assert together == [plain.generate(c, _ask(q), max_new_tokens=n) for c, q, n in jobs]
    assert merging.largest_batch >= 3


def test_evicting_the_merged_adapter_puts_the_base_weights_back_first(chat_store):
    engine = ChatEngine(base="tiny-chat", device="cpu", max_adapters=1)
    plain = ChatEngine(base="tiny-chat", device="cpu", merge_lone_adapter=False)
    engine.generate("alpha:v1", _ask("What is glaucoma?"), max_new_tokens=LONG)
    assert engine.merges == 1

    reply = engine.generate("beta:v1", _ask("Is it safe?"), max_new_tokens=8)  # alpha goes

    assert engine.loaded_adapters == ["beta:v1"]
    _base_weights_as_stored(engine, chat_store.base)
    assert reply == plain.generate("beta:v1", _ask("Is it safe?"), max_new_tokens=8)


def _base_copy(chat_store, tmp_path: Path) -> Path:
    """Base ``tiny-copy`` (a copy of the tiny base's files) with adapter ``alpha-copy:v1``."""
    copy = tmp_path / "base-copy"
    shutil.copytree(chat_store.base, copy)
    with session_scope() as session:
        base = BaseModel(name="tiny-copy", source="test", path=str(copy))
        session.add(base)
        session.flush()
        session.add(Adapter(name="alpha-copy", version=1, path=str(chat_store.adapter_a),
                            method="lora", base_model_id=base.id))
    return copy


def _rewrite(file: Path) -> None:
    """A new modification time, as a re-converted base written over the old one would have."""
    stat = file.stat()
    os.utime(file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))


def test_a_base_whose_files_changed_since_loading_is_never_merged(chat_store, tmp_path: Path):
    copy = _base_copy(chat_store, tmp_path)
    engine = ChatEngine(base="tiny-copy", device="cpu")
    plain = ChatEngine(base="tiny-copy", device="cpu", merge_lone_adapter=False)
    engine.load()
    _rewrite(copy / "model.safetensors")

    reply = engine.generate("alpha-copy:v1", _ask("What is glaucoma?"), max_new_tokens=LONG)

    assert engine.merges == 0
    assert reply == plain.generate("alpha-copy:v1", _ask("What is glaucoma?"),
                                   max_new_tokens=LONG)


def test_an_idle_engine_puts_the_base_weights_back_by_itself(chat_store):
    engine = ChatEngine(base="tiny-chat", device="cpu", unmerge_after_idle=0.2)
    engine.generate("alpha:v1", _ask("What is glaucoma?"), max_new_tokens=LONG)
    assert engine.merges == 1

    deadline = time.monotonic() + 30
    while engine.merged_adapter is not None and time.monotonic() < deadline:
        time.sleep(0.05)

    assert engine.merged_adapter is None
    _base_weights_as_stored(engine, chat_store.base)
    assert engine.loaded_adapters == ["alpha:v1"]  # still attached: the next swap is cheap


def test_base_files_changed_while_merged_fail_one_request_and_the_next_reloads(
        chat_store, tmp_path: Path):
    copy = _base_copy(chat_store, tmp_path)
    engine = ChatEngine(base="tiny-copy", device="cpu", unmerge_after_idle=600)
    plain = ChatEngine(base="tiny-copy", device="cpu", merge_lone_adapter=False)
    engine.generate("alpha-copy:v1", _ask("What is glaucoma?"), max_new_tokens=LONG)
    assert engine.merged_adapter == "alpha-copy:v1"
    _rewrite(copy / "model.safetensors")

    with pytest.raises(ChatError, match="model.safetensors changed since the base was loaded"):
        engine.generate(BASE_ONLY, _ask("Why?"), max_new_tokens=8)
    reply = engine.generate(BASE_ONLY, _ask("Why?"), max_new_tokens=8)

    assert engine.base_loads == 2
    assert reply == plain.generate(BASE_ONLY, _ask("Why?"), max_new_tokens=8)
    _base_weights_as_stored(engine, copy)


def test_a_weight_loaded_unlike_its_file_is_never_read_back_into(chat_store):
    from transformers import AutoModelForCausalLM

    from serving.merging import BaseWeights

    model = AutoModelForCausalLM.from_pretrained(chat_store.base, use_safetensors=True)
    attention = model.model.layers[0].self_attn
    with torch.no_grad():  # as a loader that permutes or rescales a weight would leave it
        attention.q_proj.weight[0, 0] += 1

    weights = BaseWeights(model, str(chat_store.base))

    assert weights.key_of(attention.q_proj.weight) is None
    assert weights.key_of(attention.k_proj.weight) == "model.layers.0.self_attn.k_proj.weight"
