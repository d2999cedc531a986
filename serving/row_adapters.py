"""Per-row LoRA adapters for a decode step, set once per step instead of once per layer.

PEFT offers two ways to choose adapters at inference: ``set_adapter`` (one adapter for the whole
batch), which walks every module on each switch (64 ms on SmolLM2), and ``adapter_names=``
(one per row), which registers a hook on every LoRA layer for each forward and turns the row
lists into index tensors again in every layer. On a 2-core CPU both cost a large share of a
decode step. Here the engine sets the rows' adapters once per step (``RowAdapters.set``), and
every plain-LoRA ``Linear`` layer reads them.

For a whole batch on one adapter the arithmetic is PEFT's own, op for op,
``base(x) + B(A(x)) * scaling``, so replies stay equal to PEFT's (and to ``generate`` through
``loraforge eval``). A single row on one adapter (one user's decode step) takes two
matrix-vector products with ``B * scaling`` computed once, ``addmv(base(x), B * scaling, A @ x)``.
Rows on several adapters (or some on the base) are done for all their adapters at once: the
adapters' ``A`` stacked one under another and their ``B * scaling`` side by side (once per set
of adapters), ``base(x) + ((x A_all^T) * mask) B_all^T``, where the mask keeps each row to its
own adapter's columns. PEFT runs four ops per adapter per layer plus the row gathers and
scatters instead; on SmolLM2 with two adapters and the base in 8 rows those made a decode step
60% slower than the base alone's. PEFT's four ops per
layer cost 35-44 us each time on a 2-core CPU, against 10-16 us, and a decode step runs
every LoRA layer once (210 of them for SmolLM2 with all-linear adapters): 0.83-0.87 of the
base's decode speed became 0.89-0.90 (``benchmarks/ui_latency.py``). Those two sums are
rounded differently, so they equal PEFT's to float rounding, not bit for bit
(``tests/serving/test_row_adapters.py`` checks the logits and the greedy tokens). Dropout is
left out: it is the identity in eval mode, and the engine never trains. DoRA and other LoRA
variants are not handled; the engine batches them apart through PEFT (``RowAdapters.clear``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F

BASE = "__base__"  # PEFT's name for rows on the base alone


class RowAdapters:
    """Which adapter each row of the next forward uses; ``None`` hands control back to PEFT."""

    def __init__(self) -> None:
        # (adapter, row indices or None for every row) for each adapter in the batch
        self.groups: list[tuple[str, torch.Tensor | None]] | None = None
        self._names: list[str] = []
        self.mixed = False  # rows on several adapters, or some on the base
        self._device: Any = None
        # layer -> its factors of the batch's adapters stacked, for ``_stacked_for`` only
        self._stacked: dict[int, _Stacked | None] = {}
        self._stacked_for: tuple[str, ...] = ()
        self._masks: dict[tuple[tuple[str, int], ...], torch.Tensor] = {}  # this step's
        # (layer, adapter) -> its factors, or None where the adapter skips the layer. Read
        # once: going through PEFT's ModuleDicts in every layer of every step cost more than
        # the adapter's own arithmetic on one row.
        self._factors: dict[tuple[int, str], _Factors | None] = {}

    def set(self, names: list[str], device: Any = None) -> None:
        rows: dict[str, list[int]] = {}
        for i, name in enumerate(names):
            if name != BASE:
                rows.setdefault(name, []).append(i)
        self.groups = [(name, None if len(index) == len(names)
                        else torch.tensor(index, device=device))
                       for name, index in sorted(rows.items())]
        self._names, self._device = names, device
        self.mixed = any(index is not None for _, index in self.groups)  # read by every layer
        self._masks = {}
        adapters = tuple(sorted(rows))
        if adapters != self._stacked_for:  # another set of adapters: stack theirs instead
            self._stacked, self._stacked_for = {}, adapters

    def clear(self) -> None:
        self.groups = None

    def forget(self) -> None:
        """Drop the factors read so far; call it when an adapter is attached or removed."""
        self._factors.clear()
        self._stacked, self._stacked_for = {}, ()

    def stacked(self, layer: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """The layer's ``A_all``, ``B_all`` and this step's row mask for the batch's adapters;
        None where none of them has the layer."""
        key = id(layer)
        if key not in self._stacked:
            present = [(name, f) for name in self._stacked_for
                       if (f := self.factors(layer, name)) is not None]
            self._stacked[key] = None if not present else _Stacked(
                torch.cat([f.a for _, f in present]),
                torch.cat([f.b_scaled for _, f in present], dim=1),
                tuple((name, f.a.shape[0]) for name, f in present))
        stacked = self._stacked[key]
        if stacked is None:
            return None
        mask = self._masks.get(stacked.layout)
        if mask is None:
            mask = torch.zeros((len(self._names), stacked.a.shape[0]), dtype=stacked.a.dtype)
            start = 0
            for name, rank in stacked.layout:
                mask[[i for i, n in enumerate(self._names) if n == name], start:start + rank] = 1
                start += rank
            mask = self._masks[stacked.layout] = mask.to(self._device or stacked.a.device)
        return stacked.a, stacked.b, mask

    def factors(self, layer: Any, name: str) -> _Factors | None:
        key = (id(layer), name)
        if key not in self._factors:
            if name not in layer.lora_A:
                self._factors[key] = None  # an adapter that does not target this layer
            elif name in layer.lora_variant:
                raise ValueError(f"adapter {name} is a LoRA variant; decode it through PEFT")
            else:
                a, b = layer.lora_A[name].weight, layer.lora_B[name].weight
                scaling = layer.scaling[name]
                self._factors[key] = _Factors(a, b, scaling, (b * scaling).contiguous())
        return self._factors[key]

    def factor_dtype(self, layer: Any, groups: list[tuple[str, torch.Tensor | None]]
                     ) -> torch.dtype | None:
        """The dtype of the batch's adapters' factors in ``layer`` (None: none has the layer),
        from the factors read once, not from PEFT's modules in every layer of every step."""
        for name, _ in groups:
            f = self.factors(layer, name)
            if f is not None:
                return f.a.dtype
        return None


@dataclass(frozen=True)
class _Stacked:
    a: torch.Tensor  # [sum of ranks, in]: each adapter's A, one under another
    b: torch.Tensor  # [out, sum of ranks]: each adapter's B * scaling, side by side
    layout: tuple[tuple[str, int], ...]  # (adapter, rank) in stacking order


@dataclass(frozen=True)
class _Factors:
    a: torch.Tensor
    b: torch.Tensor
    scaling: float
    b_scaled: torch.Tensor  # for the one-row path


def _forward(self: Any, rows: RowAdapters, x: torch.Tensor, *args: Any,
             **kwargs: Any) -> torch.Tensor:
    groups = rows.groups
    if groups is None or kwargs.get("adapter_names") is not None:
        return type(self).forward(self, x, *args, **kwargs)
    result = self.base_layer(x, *args, **kwargs)
    factor_dtype = rows.factor_dtype(self, groups) if groups else None
    if factor_dtype is not None and x.dtype != factor_dtype:
        return _forward_cast(self, rows, groups, x.to(factor_dtype), result)
    stacked = rows.stacked(self) if rows.mixed else None
    if stacked is not None and x.dtype == result.dtype == stacked[0].dtype:
        return result + _stacked_delta(x, stacked)
    for name, index in groups:
        f = rows.factors(self, name)
        if f is None:
            continue
        if index is not None:
            result[index] += F.linear(F.linear(x[index], f.a), f.b) * f.scaling
        elif x.numel() == x.shape[-1] and x.dtype == result.dtype == f.a.dtype:
            one = torch.addmv(result.reshape(-1), f.b_scaled, torch.mv(f.a, x.reshape(-1)))
            result = one.view(result.shape)
        else:
            result = result + F.linear(F.linear(x, f.a), f.b) * f.scaling
    return result


def _stacked_delta(x: torch.Tensor, stacked: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
                   ) -> torch.Tensor:
    """Every row's own adapter's part, ``((x A_all^T) * mask) B_all^T``."""
    a, b, mask = stacked
    lowered = F.linear(x, a)
    lowered = lowered * mask.view(mask.shape[0], *[1] * (lowered.dim() - 2), mask.shape[1])
    return F.linear(lowered, b)


def _forward_cast(self: Any, rows: RowAdapters, groups: list[tuple[str, torch.Tensor | None]],
                  low: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
    """A base in another dtype than its adapters' factors (bfloat16 weights, float32 factors,
    as PEFT loads them): the adapters' part in the factors' dtype, added in it and rounded to
    the base's once, as PEFT does. Factors in bfloat16 would cost more than they save: one-row
    bfloat16 products have no fast CPU kernel (SmolLM2 decoded at 0.36x the base's speed)."""
    stacked = rows.stacked(self) if rows.mixed else None
    if stacked is not None and stacked[0].dtype == low.dtype:
        return (result + _stacked_delta(low, stacked)).to(result.dtype)
    delta = torch.zeros(result.shape, dtype=low.dtype, device=result.device)
    for name, index in groups:
        f = rows.factors(self, name)
        if f is None:
            continue
        if index is not None:
            delta[index] += F.linear(F.linear(low[index], f.a), f.b_scaled)
        else:
            delta += F.linear(F.linear(low, f.a), f.b_scaled)
    return (result + delta).to(result.dtype)


def in_linear_layers_only(model: Any, name: str) -> bool:
    """Whether adapter ``name`` lives only in LoRA ``Linear`` layers: no LoRA embedding or
    convolution, no ``modules_to_save`` copy. Those follow PEFT's active-adapter state, which
    ``RowAdapters`` does not set, so while any attached adapter has them the engine leaves
    every batch to PEFT."""
    from peft.tuners.lora.layer import Linear, LoraLayer
    from peft.utils import ModulesToSaveWrapper

    for module in model.modules():
        if isinstance(module, ModulesToSaveWrapper) and name in module.modules_to_save:
            return False
        if isinstance(module, LoraLayer) and type(module) is not Linear and any(
                name in getattr(module, kind, {}) for kind in module.adapter_layer_names):
            return False
    return True


def install(model: Any, rows: RowAdapters) -> int:
    """Route every PEFT LoRA ``Linear`` of ``model`` through ``rows``; the number routed.
    Call it again after attaching an adapter to a model that had none (new LoRA layers)."""
    from peft.tuners.lora.layer import Linear

    routed = 0
    for module in model.modules():
        if type(module) is Linear:
            if "forward" not in module.__dict__:
                module.forward = partial(_forward, module, rows)
            routed += 1
    return routed
