"""A faster ``nn.Linear`` for the few rows of a decode step, on CPU.

``F.linear`` computes ``x @ W.T``. With a handful of rows in ``x``, the CPU GEMM it calls runs far
below memory bandwidth: on the 2-core machine this was built on, SmolLM2's 49152 x 576 output
layer took 53 ms for 8 rows as ``F.linear`` and 13.5 ms as ``W @ x.T``, the same sum in the other
operand order (``python benchmarks/small_batch_linear.py``). A decode step is a few rows through
every layer, so this is most of a batched step's time. From a few hundred rows up (a prompt's
prefill, training) the two are level; ``F.linear`` is kept there.

One row, a chat's decode step, is padded to two. A one-row product is a matrix-vector product
(GEMV), and the CPU library's GEMV read SmolLM2's weights at half the speed its two-column GEMM
did: the output layer took 11.4 ms for one row and 5.2 ms padded to two, and ``generate`` made
13.4 tokens/s against 19.2 (``python benchmarks/small_batch_linear.py --model smollm2`` times
both). The padded row adds no weight reads, and those reads are a decode step's time here.

The result is the same sum in another order, so it may differ from ``F.linear`` in the last bit,
as ``F.linear`` itself does between a batch of one row and of eight. A row alone and the same row
beside another get the same bits, since both run the same two-column product.
"""

from __future__ import annotations

from types import MethodType
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# Rows up to which W @ x.T was at least as fast as F.linear for every layer shape measured.
MAX_ROWS = 128


def _forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
    if not 0 < rows <= MAX_ROWS or x.dtype != torch.float32 or x.device.type != "cpu":
        return F.linear(x, self.weight, self.bias)
    flat = x.reshape(rows, x.shape[-1])
    if rows == 1:
        flat = torch.cat([flat, flat.new_zeros(flat.shape)])
    out = torch.matmul(self.weight, flat.t()).t()[:rows]
    if self.bias is not None:
        out = out + self.bias
    return out.contiguous().view(*x.shape[:-1], self.out_features)


def speed_up_small_batches(model: Any) -> int:
    """Make every plain float32 CPU ``nn.Linear`` in ``model`` use the small-batch path; the
    number changed. LoRA factors keep ``F.linear``: they are tiny, and an adapter attached
    before this call then computes as one attached after it (the engine's), bit for bit."""
    changed = 0
    for name, module in model.named_modules():
        if (type(module) is nn.Linear and ".lora_" not in name
                and module.weight.device.type == "cpu"
                and module.weight.dtype == torch.float32):
            module.forward = MethodType(_forward, module)
            changed += 1
    return changed
