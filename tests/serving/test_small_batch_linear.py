"""The small-batch linear path computes what F.linear does, and only where it is faster."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from core.small_batch_linear import MAX_ROWS, speed_up_small_batches


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("shape", [(1, 48), (1, 1, 48), (2, 1, 48), (8, 1, 48), (3, 5, 48),
                                   (4, 48)])
def test_rows_give_what_f_linear_gives(shape: tuple[int, ...], bias: bool):
    torch.manual_seed(0)
    layer = nn.Linear(48, 96, bias=bias)
    x = torch.randn(*shape)
    expected = F.linear(x, layer.weight, layer.bias)

    assert speed_up_small_batches(layer) == 1
    got = layer(x)

    assert got.shape == expected.shape and got.is_contiguous()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_many_rows_stay_on_f_linear_bit_for_bit():
    torch.manual_seed(0)
    layer = nn.Linear(48, 96)
    x = torch.randn(MAX_ROWS + 1, 48)
    expected = F.linear(x, layer.weight, layer.bias)
    speed_up_small_batches(layer)
    assert torch.equal(layer(x), expected)


def test_a_row_alone_gets_the_bits_it_gets_beside_another():
    # One row is padded to two, so a chat's lone reply and the same reply in a batch of two
    # are one computation. (F.linear on the lone row differs from the pair in the last bits.)
    torch.manual_seed(0)
    layer = nn.Linear(576, 960)
    pair = torch.randn(2, 576)
    speed_up_small_batches(layer)
    assert torch.equal(layer(pair[:1])[0], layer(pair)[0])


def test_only_plain_float32_linears_change_and_gradients_still_flow():
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4).to(torch.float64))
    assert speed_up_small_batches(model) == 1

    x = torch.randn(3, 8, requires_grad=True)
    model[0](x).sum().backward()
    assert x.grad is not None and model[0].weight.grad is not None


def test_lora_factors_keep_f_linear():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4)),
                           LoraConfig(r=2, target_modules=["0", "2"]))
    assert speed_up_small_batches(model) == 2  # the two base layers, not their 4 factors
