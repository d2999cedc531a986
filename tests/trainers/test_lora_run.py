"""LoRA runs end to end on the tiny base: loss falls, the run and adapter are recorded, and the
adapter is a plain PEFT adapter that changes the model. Bad requests write nothing."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from registry.adapters import get_adapter, get_run, list_adapters, list_runs
from registry.errors import RegistryError
from trainers.backends.lora import LoraBackend
from trainers.config import LoraTrainConfig
from trainers.discovery import discover_backends, get_backend
from trainers.errors import TrainerError
from trainers.generate import generate_answer
from trainers.protocol import TrainerBackend
from trainers.run import run_training


def test_training_lowers_the_loss_and_records_run_and_adapter(trained_store):
    adapter = get_adapter(trained_store.adapter_id)
    assert adapter.label == "tiny-lora:v1" and adapter.method == "lora"
    assert adapter.base_name == "tiny" and adapter.base_path.endswith("bases/tiny")
    run = get_run(adapter.training_run_id)
    assert run.status == "succeeded" and run.error is None
    assert run.config["rank"] == 8 and run.config["max_steps"] == 60
    curve = run.loss_curve
    assert len(curve) >= 10
    quarter = len(curve) // 4  # per-batch losses are noisy; compare the first and last quarters
    first = sum(p["loss"] for p in curve[:quarter]) / quarter
    last = sum(p["loss"] for p in curve[-quarter:]) / quarter
    assert last < 0.85 * first, curve
    m = adapter.metrics
    assert 0 < m["trainable_params"] < m["total_params"]
    assert m["peak_memory_bytes"] > 0 and m["tokens_per_second"] > 0
    assert m["samples_per_second"] > 0 and m["wall_seconds"] > 0 and m["steps"] == 60
    assert m["final_loss"] == curve[-1]["loss"]


def test_adapter_is_standard_peft_and_changes_the_output(trained_store):
    adapter = get_adapter("tiny-lora:v1")
    files = {p.name for p in Path(adapter.path).iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= files
    assert Path(adapter.path).name == "tiny-lora-v1"
    tokenizer = AutoTokenizer.from_pretrained(adapter.base_path)
    base = AutoModelForCausalLM.from_pretrained(adapter.base_path)
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "What causes Dry Eye ?"}],
                                        add_generation_prompt=True, return_tensors="pt",
                                        return_dict=True)["input_ids"]
    with torch.no_grad():
        before = base(input_ids=ids).logits
        tuned = PeftModel.from_pretrained(base, adapter.path).eval()
        after = tuned(input_ids=ids).logits
    assert not torch.allclose(before, after, atol=1e-4)
    answer = generate_answer(tuned, tokenizer, [{"role": "user", "content": "What is COPD ?"}],
                             max_new_tokens=20)
    assert isinstance(answer, str) and "<|im_end|>" not in answer


def test_a_second_run_gets_the_next_version(trained_store):
    adapter_id = run_training(overrides={"max_steps": 2, "max_length": 128})
    assert get_adapter(adapter_id).label == "tiny-lora:v2"
    assert get_adapter("tiny-lora").version == 2  # a bare name means the newest
    labels = [a.label for a in list_adapters() if a.name == "tiny-lora"]
    assert labels[:2] == ["tiny-lora:v1", "tiny-lora:v2"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"overrides": {"rank": 0}}, "rank must be at least 1"),
        ({"overrides": {"learning_rate": -1}}, "learning rate must be positive"),
        ({"overrides": {"ranks": 8}}, "unknown option"),
        ({"method": "nope"}, "unknown training method 'nope'; available: dora, full, "),
        ({"base": "llama-70b"}, "no base model called 'llama-70b'"),
        ({"snapshot": "nope"}, "no dataset snapshot called 'nope'"),
        ({"adapter_name": "a:b"}, "must be non-empty"),
    ],
)
def test_bad_requests_raise_before_any_row_is_written(trained_store, kwargs, message):
    runs, adapters = len(list_runs()), len(list_adapters())
    with pytest.raises(TrainerError, match=message):
        run_training(**kwargs)
    assert (len(list_runs()), len(list_adapters())) == (runs, adapters)


def test_a_crash_while_training_marks_the_run_failed_and_leaves_nothing(trained_store,
                                                                          monkeypatch):
    def explode(self, model_path, train_file, eval_file, output_dir, config):
        (output_dir / "adapter_model.safetensors").write_bytes(b"half written")
        raise RuntimeError("out of memory")

    monkeypatch.setattr(LoraBackend, "train", explode)
    adapters_before = len(list_adapters())
    with pytest.raises(TrainerError, match="out of memory"):
        run_training(adapter_name="doomed")
    run = list_runs()[-1]
    assert run.status == "failed" and "out of memory" in run.error
    assert len(list_adapters()) == adapters_before
    adapters_dir = trained_store.home / "adapters"
    assert not any(p.name.startswith((".run", "doomed")) for p in adapters_dir.iterdir())


def test_get_adapter_by_id_label_and_unknown(trained_store):
    assert get_adapter(str(trained_store.adapter_id)).label == "tiny-lora:v1"
    with pytest.raises(RegistryError, match="no adapter 'ghost:v1'"):
        get_adapter("ghost:v1")


def test_entry_point_discovery_finds_the_lora_backend():
    discover_backends.cache_clear()
    backends = discover_backends()
    assert "lora" in backends
    lora = get_backend("lora")
    assert isinstance(lora, TrainerBackend) and lora.config_class is LoraTrainConfig


def test_lora_config_fields_all_have_help():
    for field in dataclasses.fields(LoraTrainConfig):
        assert field.metadata.get("help"), field.name
    with pytest.raises(ValueError, match="target modules"):
        LoraTrainConfig(target_modules=[])


def test_every_run_records_flops_eval_loss_perplexity_and_test_split_scores(trained_store):
    m = get_adapter(trained_store.adapter_id).metrics
    assert m["total_flos"] > 0
    assert m["eval_loss"] > 0 and m["perplexity"] == pytest.approx(2.718281828 ** m["eval_loss"],
                                                                   rel=1e-2)
    assert [p["step"] for p in m["eval_curve"]] == [30, 60]
    assert 0 <= m["rouge_l"] <= 1 and 0 <= m["exact_match"] <= 1
    assert m["generated_examples"] == 2 and len(m["examples"]) == 2
    example = m["examples"][0]
    assert example["question"] and example["reference"] and isinstance(example["predicted"], str)
    saved = json.loads((Path(get_adapter(trained_store.adapter_id).path)
                        / "train_metrics.json").read_text())
    assert saved["method"] == "lora" and saved["config"]["rank"] == 8
