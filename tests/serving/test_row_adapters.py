"""Per-step row adapters give PEFT's own logits: bit for bit for rows on one adapter, to float
rounding (the same sum in another order) for rows on several."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from serving.row_adapters import BASE, RowAdapters, in_linear_layers_only, install


@pytest.fixture
def two_adapters() -> PeftModel:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
    model = LlamaForCausalLM(config)
    first = LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                       target_modules=["q_proj", "v_proj", "down_proj"])
    # a scaling of 1.5: not a power of two, so folding it into B rounds differently
    second = LoraConfig(r=2, lora_alpha=3, init_lora_weights=False, target_modules=["q_proj"])
    model = get_peft_model(model, first, adapter_name="one")
    model.add_adapter("two", second)
    return model.eval()


def _logits(model, ids: torch.Tensor, **extra) -> torch.Tensor:
    with torch.inference_mode():
        return model(input_ids=ids, **extra).logits


def test_mixed_and_single_rows_equal_peft_and_leave_peft_alone_when_cleared(two_adapters):
    model = two_adapters
    ids = torch.randint(0, 64, (4, 6), generator=torch.Generator().manual_seed(1))
    names = ["one", "two", BASE, "one"]
    peft_mixed = _logits(model, ids, adapter_names=names)
    model.set_adapter("two")
    peft_b = _logits(model, ids)
    with model.disable_adapter():
        peft_base = _logits(model, ids)
    model.set_adapter("one")
    peft_a = _logits(model, ids)

    rows = RowAdapters()
    assert install(model, rows) == 6  # q and v in 2 layers, down in 2 layers
    assert torch.equal(_logits(model, ids), peft_a)  # not set: PEFT decides

    rows.set(names)
    mixed = _logits(model, ids)
    assert torch.allclose(mixed, peft_mixed, rtol=0, atol=1e-5), (mixed - peft_mixed).abs().max()
    assert torch.equal(mixed.argmax(-1), peft_mixed.argmax(-1))
    rows.set(["two"] * 4)
    assert torch.equal(_logits(model, ids), peft_b)
    rows.set([BASE] * 4)
    assert torch.equal(_logits(model, ids), peft_base)
    assert not torch.equal(peft_a, peft_base) and not torch.equal(peft_mixed[1], peft_a[1])

    rows.clear()
    assert torch.equal(_logits(model, ids), peft_a)


def test_one_row_decodes_peft_tokens_and_logits_to_float_rounding(two_adapters):
    model = two_adapters
    prompt = torch.randint(0, 64, (1, 5), generator=torch.Generator().manual_seed(2))
    model.set_adapter("one")
    with torch.inference_mode():
        peft = model.generate(input_ids=prompt, do_sample=False, max_new_tokens=12,
                              min_new_tokens=12, output_logits=True, return_dict_in_generate=True)
    rows = RowAdapters()
    install(model, rows)
    rows.set(["one"])
    with torch.inference_mode():
        ours = model.generate(input_ids=prompt, do_sample=False, max_new_tokens=12,
                              min_new_tokens=12, output_logits=True, return_dict_in_generate=True)
    assert torch.equal(ours.sequences, peft.sequences)
    # Every step after the prompt's decodes one row: the matrix-vector path.
    for step, (a, b) in enumerate(zip(ours.logits, peft.logits, strict=True)):
        assert torch.allclose(a, b, rtol=0, atol=1e-5), (step, (a - b).abs().max())
    with torch.inference_mode():  # and it is the adapter's own output, not the base's
        rows.set([BASE])
        base = model.generate(input_ids=prompt, do_sample=False, max_new_tokens=12,
                              min_new_tokens=12, output_logits=True, return_dict_in_generate=True)
    assert (base.logits[-1] - peft.logits[-1]).abs().max() > 1e-2


def test_adapters_outside_linear_layers_are_told_apart(two_adapters):
    model = two_adapters
    model.add_adapter("emb", LoraConfig(r=2, target_modules=["embed_tokens", "q_proj"]))
    model.add_adapter("saved", LoraConfig(r=2, target_modules=["q_proj"],
                                          modules_to_save=["lm_head"]))
    assert in_linear_layers_only(model, "one") and in_linear_layers_only(model, "two")
    assert not in_linear_layers_only(model, "emb")
    assert not in_linear_layers_only(model, "saved")
