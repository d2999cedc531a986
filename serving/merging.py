"""Folding the one adapter that serves a whole batch into the resident base weights.

A decode step with a LoRA adapter runs every LoRA layer's factors beside its base weight: on
SmolLM2 with an all-linear rank-16 adapter on 2 CPU cores that is a tenth of the step. While
every row of the batch is on one plain-LoRA adapter, the engine folds it into the base weights
(``W += B A * scaling``, as PEFT's ``merge`` does) and the step runs as fast as the bare
base. When a row on another adapter or on the base joins, the base's weights are put back.

They are put back **bit for bit**, read again from the base's safetensors files, not unmerged
by subtracting the delta: ``(W + D) - D`` rounds differently from ``W``, so base rows and mixed
batches after an unmerge would drift from the replies they give before it. Re-reading costs
no memory while merged (the files are in the page cache after the load) at the price of a
copy of the adapter's target layers per restore. A base whose weights cannot be read back
that way (no local safetensors files, renamed keys, changed files, quantized layers) is never
merged; the engine keeps the unmerged path for it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)

# Merging and restoring cost about as much as 20 decode steps of SmolLM2 on 2 CPU cores: fold
# an adapter in only while some running row may still decode at least this many tokens.
MERGE_MIN_TOKENS = 32


class MergeError(RuntimeError):
    """The base's own weights could not be read back after a merge."""


class BaseWeights:
    """Where each linear weight of the resident base lives in its safetensors files."""

    def __init__(self, model: nn.Module, base_path: str) -> None:
        # Parameters keep their identity when PEFT wraps a layer (it becomes ``base_layer``), so
        # the ids taken here still find the keys after adapters are attached. Called right after
        # the load, while the weights are still the files' own.
        self._keys: dict[int, str] = {}
        self._files: dict[str, Path] = {}
        self._stamps: dict[Path, tuple[int, int]] = {}
        folder = Path(base_path)
        if not folder.is_dir():  # a Hub id: nothing local to read back from
            return
        from safetensors import safe_open

        linear = {f"{name}.weight": m.weight for name, m in model.named_modules()
                  if type(m) is nn.Linear and m.weight.is_floating_point()}
        for file in sorted(folder.glob("*.safetensors")):
            with safe_open(str(file), framework="pt") as handle:
                for key in handle.keys():
                    weight = linear.get(key)
                    if weight is not None and _loaded_as_stored(weight, handle.get_slice(key)):
                        self._keys[id(weight)] = key
                        self._files[key] = file
            stat = file.stat()
            self._stamps[file] = (stat.st_size, stat.st_mtime_ns)

    def key_of(self, weight: torch.Tensor) -> str | None:
        """The file key of a base weight that can be read back as it was loaded, else None."""
        return self._keys.get(id(weight))

    def unchanged(self, keys: list[str]) -> bool:
        """Whether the files holding these keys are still the ones loaded."""
        return all(self._unchanged(file) for file in {self._files[key] for key in keys})

    def _unchanged(self, file: Path) -> bool:
        """Whether the file is still the one loaded (same size and modification time)."""
        try:
            stat = os.stat(file)
        except OSError:
            return False
        return self._stamps[file] == (stat.st_size, stat.st_mtime_ns)

    def read_back(self, weights: list[tuple[torch.Tensor, str]]) -> None:
        """Copy each weight's stored value over it again (cast as the load cast it)."""
        from safetensors import safe_open

        by_file: dict[Path, list[tuple[torch.Tensor, str]]] = {}
        for weight, key in weights:
            by_file.setdefault(self._files[key], []).append((weight, key))
        changed = [file.name for file in by_file if not self._unchanged(file)]
        if changed:  # reading them would give another model's weights
            raise OSError(f"{', '.join(changed)} changed since the base was loaded")
        with torch.no_grad():
            for file, items in by_file.items():
                with safe_open(str(file), framework="pt") as handle:
                    for weight, key in items:
                        weight.copy_(handle.get_tensor(key))


def _loaded_as_stored(weight: torch.Tensor, stored: Any) -> bool:
    """Whether the file's tensor is this weight as loaded, by shape and first row: a loader
    that renames, transposes or permutes a weight makes reading it back wrong."""
    if list(stored.get_shape()) != list(weight.shape) or weight.dim() != 2:
        return False
    row = stored[0:1].to(device=weight.device, dtype=weight.dtype)
    return bool(torch.equal(row, weight[0:1].detach()))


class LoneAdapterMerge:
    """Which adapter, if any, is folded into the base weights now, and how to undo it."""

    def __init__(self, weights: BaseWeights) -> None:
        self._weights = weights
        self.name: str | None = None  # the PEFT adapter name merged now
        self.merges = 0  # times an adapter was folded in, for benchmarks and tests
        self._merged: list[tuple[torch.Tensor, str]] = []
        self._unmergeable: set[str] = set()

    def merge(self, model: nn.Module, name: str) -> bool:
        """Fold adapter ``name`` into the base weights; False (and nothing changed) where its
        layers' weights could not be restored exactly afterwards."""
        if self.name == name:
            return True
        if name in self._unmergeable:  # known: not worth a walk over the model every step
            return False
        if self.name is not None:
            self.restore()
        layers = _layers_of(model, name)
        keys = [self._weights.key_of(layer.base_layer.weight) for layer in layers]
        if not layers or None in keys or not self._weights.unchanged(keys):  # type: ignore[arg-type]
            if name not in self._unmergeable:
                self._unmergeable.add(name)
                logger.info("adapter %s decodes unmerged: the base's weights under it cannot "
                            "be read back from local safetensors files", name)
            return False
        with torch.no_grad():
            for layer, key in zip(layers, keys, strict=True):
                weight = layer.base_layer.weight
                # W += B A * scaling in place: PEFT's delta (``get_delta_weight``) without its
                # temporary, which cost as much again in fresh pages as the product itself.
                weight.addmm_(layer.lora_B[name].weight.to(weight.dtype),
                              layer.lora_A[name].weight.to(weight.dtype),
                              alpha=layer.scaling[name])
                self._merged.append((weight, key))  # type: ignore[arg-type]
        self.name = name
        self.merges += 1
        return True

    def restore(self) -> None:
        """Put the base's own weights back; a no-op when nothing is merged."""
        if self.name is None:
            return
        try:
            self._weights.read_back(self._merged)
        except Exception as exc:
            raise MergeError(f"could not read the base weights back after a merge ({exc}); "
                             "the engine reloads the base") from exc
        self._merged, self.name = [], None  # only now: readers of ``name`` see it done


def _layers_of(model: nn.Module, name: str) -> list[Any]:
    """The plain LoRA ``Linear`` layers adapter ``name`` has factors in, with plain float
    ``nn.Linear`` base layers (a quantized base layer is never merged into)."""
    from peft.tuners.lora.layer import Linear

    layers = []
    for module in model.modules():
        if isinstance(module, Linear) and name in module.lora_A:
            if (type(module) is not Linear or name in module.lora_variant
                    or type(module.base_layer) is not nn.Linear):
                return []
            layers.append(module)
    return layers
