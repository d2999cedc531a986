"""On CPU, TRL's fused LM head scores only the labelled positions (our patch): same loss and
gradients as the model's own cross-entropy, whichever positions are masked."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM


@pytest.fixture
def restored_trl():
    """TRL's own decision for the test (a training earlier in this worker may have patched it),
    and whatever was there before afterwards."""
    import trl.trainer.utils as trl_utils

    before = trl_utils._use_triton
    original = getattr(before, "trl_decide", before)
    trl_utils._use_triton = original
    yield trl_utils, original
    trl_utils._use_triton = before


def _loss_and_grads(model, ids, labels, **kwargs):
    model.zero_grad()
    loss = model(input_ids=ids, labels=labels, **kwargs).loss
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


def test_labelled_positions_only_gives_the_models_own_loss_and_gradients(restored_trl):
    from trl.trainer.utils import add_fused_lm_head

    from trainers.backends.sft import score_labelled_positions_only

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
    model = LlamaForCausalLM(config).float()
    ids = torch.randint(0, 300, (3, 17))
    labels = ids.clone()
    labels[0, :9] = -100  # a prompt
    labels[1, :4] = -100
    labels[2, 12:] = -100  # padding at the end
    expected, expected_grads = _loss_and_grads(model, ids, labels)

    trl_utils, original = restored_trl
    add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
    assert not trl_utils._use_triton(torch.device("cpu"))  # TRL's own choice off CUDA
    score_labelled_positions_only()
    score_labelled_positions_only()  # a second call must not wrap the first
    assert trl_utils._use_triton(torch.device("cpu"))
    assert trl_utils._use_triton.trl_decide is original
    loss, grads = _loss_and_grads(model, ids, labels, fused_lm_head=True)

    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    assert len(grads) == len(expected_grads)
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
