"""The tiny base: built from the store's text, saved atomically, recorded, chat-ready."""

from __future__ import annotations

import json

import pytest
from transformers import AutoConfig, AutoTokenizer

from registry.bases import count_bases, find_base
from trainers.base_model import build_tiny_base, register_base
from trainers.errors import TrainerError


def test_tiny_base_is_recorded_and_its_files_are_complete(trained_store):
    base = find_base("tiny")
    assert base is not None and base.id == trained_store.base_id
    assert base.source == "built:tiny" and base.architecture == "LlamaForCausalLM"
    files = {p.name for p in (trained_store.home / "bases" / "tiny").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= files
    # Only the final directory: the temp dir it was written to is gone.
    assert [p.name for p in (trained_store.home / "bases").iterdir()] == ["tiny"]
    config = AutoConfig.from_pretrained(base.path)
    for size in (config.hidden_size, config.intermediate_size, config.vocab_size, config.head_dim):
        assert size % 32 == 0
    assert base.parameters > 100_000
    curve = json.loads((trained_store.home / "bases" / "tiny" / "pretrain_loss.json").read_text())
    assert curve[-1]["loss"] < curve[0]["loss"]


def test_tokenizer_chat_template_renders_a_chat(trained_store):
    tokenizer = AutoTokenizer.from_pretrained(find_base("tiny").path)
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is AMD?"}]
    text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert text == ("<|im_start|>system\nBe brief.<|im_end|>\n"
                    "<|im_start|>user\nWhat is AMD?<|im_end|>\n<|im_start|>assistant\n")
    answer = {"role": "assistant", "content": "An eye disease."}
    full = tokenizer.apply_chat_template([*chat, answer], tokenize=False)
    assert full.endswith("<|im_start|>assistant\nAn eye disease.<|im_end|>\n")
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<pad>"
    ids = tokenizer("macular degeneration")["input_ids"]
    assert tokenizer.decode(ids) == "macular degeneration"


def test_building_a_taken_name_is_refused(trained_store):
    before = count_bases()
    with pytest.raises(TrainerError, match="exists"):
        build_tiny_base(name="tiny", steps=1)
    assert count_bases() == before


def test_empty_store_cannot_build_a_base(home):
    with pytest.raises(TrainerError, match="no text"):
        build_tiny_base(steps=1)
    assert count_bases() == 0


def test_register_base_checks_local_dirs_and_records_hub_ids(home, tmp_path):
    with pytest.raises(TrainerError, match="config.json"):
        register_base("empty", str(tmp_path))
    with pytest.raises(TrainerError, match="neither a local directory nor a Hub id"):
        register_base("typo", "not a model")
    register_base("smol", "HuggingFaceTB/SmolLM2-135M")
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    register_base("local", str(tmp_path))
    assert find_base("smol").model_path == "HuggingFaceTB/SmolLM2-135M"
    assert find_base("local").architecture == "LlamaForCausalLM"
    assert count_bases() == 2
