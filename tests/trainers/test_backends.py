"""Every built-in backend, through the conformance kit on a tiny random Llama: registered via
the entry point, loss falls, the artifacts load with plain from_pretrained and change the
output. Plus what makes each variant that variant."""

from __future__ import annotations

import json

import pytest
import torch

from trainers.discovery import backend_packages, discover_backends, get_backend
from trainers.testing import check_backend, make_tiny_model

BUILT_INS = ["lora", "qlora", "loraplus", "pissa", "dora", "full"]


def test_built_in_backends_register_through_the_entry_point_group():
    discover_backends.cache_clear()
    assert set(BUILT_INS) <= set(discover_backends())
    packages = backend_packages()
    assert all(packages[name] == "loraforge" for name in BUILT_INS)


@pytest.mark.slow
@pytest.mark.parametrize("method", BUILT_INS)
def test_backend_passes_the_conformance_kit(method, tmp_path):
    result = check_backend(get_backend(method), tmp_path)
    m = result.metrics
    assert m["total_flos"] > 0 and m["eval_loss"] > 0 and m["perplexity"] > 1
    assert 0 <= m["rouge_l"] <= 1 and m["exact_match"] in (0.0, 0.5, 1.0)
    assert len(m["examples"]) == 2 and {"question", "reference", "predicted"} <= set(
        m["examples"][0])
    out = tmp_path / "out"
    if method == "full":
        assert (out / "config.json").is_file() and not (out / "adapter_config.json").exists()
        assert m["trainable_params"] == m["total_params"]
    else:
        config = json.loads((out / "adapter_config.json").read_text())
        assert config["peft_type"] == "LORA"
        assert config["use_dora"] == (method == "dora")
        assert m["trainable_params"] < m["total_params"]


@pytest.mark.slow
def test_pissa_adapter_loads_on_the_untouched_base_with_the_trained_logits(tmp_path):
    result = check_backend(get_backend("pissa"), tmp_path, {"rank": 4})
    # The backend compares the trained (residual-base) model with untouched base + converted
    # adapter on a probe input and refuses to save if they differ.
    assert result.metrics["pissa_conversion_max_logit_diff"] < 1e-4
    config = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert config["r"] == 8 and config["init_lora_weights"] is True  # rank 2r, plain LoRA


@pytest.mark.slow
def test_rslora_option_reaches_the_adapter_config_and_padding_free_batches_train(tmp_path):
    result = check_backend(get_backend("lora"), tmp_path,
                           {"use_rslora": True, "rank": 16, "padding_free": True})
    assert result.metrics["batching"] == "padding_free"
    config = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert config["use_rslora"] is True and config["r"] == 16


def test_loraplus_gives_b_matrices_ratio_times_the_learning_rate(tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    backend = get_backend("loraplus")
    config = backend.config_class(learning_rate=1e-3, loraplus_lr_ratio=8.0)
    model = AutoModelForCausalLM.from_pretrained(make_tiny_model(tmp_path / "base"))
    model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))
    optimizer = backend.create_optimizer(model, config)
    by_lr = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            by_lr[id(p)] = group["lr"]
    for name, p in model.named_parameters():
        if "lora_A" in name:
            assert by_lr[id(p)] == pytest.approx(1e-3)
        elif "lora_B" in name:
            assert by_lr[id(p)] == pytest.approx(8e-3)


def test_full_fine_tune_trains_every_weight(tmp_path):
    from transformers import AutoModelForCausalLM

    backend = get_backend("full")
    config = backend.config_class()
    model = AutoModelForCausalLM.from_pretrained(make_tiny_model(tmp_path / "base"))
    wrapped = backend.wrap_model(model, config, tmp_path)
    assert wrapped is model and all(p.requires_grad for p in model.parameters())
    assert backend.peft_config(config) is None
    assert torch.is_tensor(next(model.parameters()))


@pytest.mark.slow
def test_early_stopping_ends_a_diverging_run_and_records_the_eval_curve(tmp_path):
    from trainers.testing import KIT_SETTINGS, write_chats

    backend = get_backend("lora")
    model_path = make_tiny_model(tmp_path / "base")
    train, test = write_chats(tmp_path / "data")
    config = backend.config_class(**{**KIT_SETTINGS, "max_steps": 40, "learning_rate": 3.0,
                                     "eval_steps": 2, "early_stopping_patience": 1,
                                     "generate_examples": 0})
    result = backend.train(model_path, train, test, tmp_path / "out", config)
    curve = result.metrics["eval_curve"]
    assert result.metrics["steps"] < 40, curve  # stopped early
    assert len(curve) >= 2 and curve[0]["step"] == 2
    assert (tmp_path / "out" / "adapter_config.json").is_file()
