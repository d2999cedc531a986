"""Step-by-step decoding of a changing batch: rows join between steps and leave when done.

A ``DecodeBatch`` holds the rows being decoded, their KV cache (left-padded to one length),
attention mask and adapter names. ``admit`` prefills new prompts and merges their cache into the
running one; ``step`` decodes one token for every row; ``keep`` drops rows that have ended. Each
row has its own LoRA adapter in the same forward pass (``serving.row_adapters``, or PEFT's
``adapter_names``), as the engine's scope arranges.

Greedy rows equal ``trainers.generate.generate_ids`` (transformers' ``generate``) token for token:
padding is masked out and positions count real tokens only, as ``generate`` counts them
(tests/serving/test_batching.py checks both).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from serving.prefix_cache import KV, PrefixCache

# Readies the next forward for these rows' adapter names ("__base__": none); returns the extra
# keyword arguments that forward needs.
AdapterScope = Callable[[list[str]], dict[str, Any]]


def _left_pad(tensor: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    missing = width - tensor.shape[dim]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def pick_tokens(logits: torch.Tensor, settings: list[tuple[float, float]]) -> torch.Tensor:
    """The next token of each row: argmax at temperature 0, else sampled with top-p."""
    tokens = logits.argmax(-1)
    for i, (temperature, top_p) in enumerate(settings):
        if temperature <= 0:
            continue
        probs = torch.softmax(logits[i].float() / temperature, dim=-1)
        ordered, order = probs.sort(descending=True)
        # keep the smallest head of the distribution whose mass reaches top_p (at least one)
        ordered[(ordered.cumsum(-1) - ordered) > top_p] = 0
        tokens[i] = order[torch.multinomial(ordered, 1)]
    return tokens


class DecodeBatch:
    """The rows decoded together now, and everything their next step needs."""

    def __init__(self, model: Any, pad_id: int, device: Any, scope: AdapterScope,
                 prefixes: PrefixCache | None = None) -> None:
        self.model = model
        self.prefixes = prefixes  # keys and values of earlier prompts, reused by ``admit``
        self.pad_id = pad_id
        self.device = device
        self.scope = scope
        self.rows: list[Any] = []
        self.names: list[str] = []
        self.settings: list[tuple[float, float]] = []
        self.cache: DynamicCache | None = None
        self.mask = torch.zeros((0, 0), dtype=torch.long, device=device)
        self.last = torch.zeros((0, 1), dtype=torch.long, device=device)

    @property
    def joinable(self) -> bool:
        """Whether new rows may join mid-decode: only caches of plain layers can be padded
        and stacked (a sliding-window layer would drop the wrong tokens)."""
        return self.cache is None or all(type(layer) is DynamicLayer
                                         for layer in self.cache.layers)

    def admit(self, rows: list[Any], names: list[str], prompts: list[list[int]],
              settings: list[tuple[float, float]]) -> torch.Tensor:
        """Prefill ``prompts`` (one per new row) and add the rows; their first tokens.

        A row whose prompt starts with a stored prefix of its adapter computes only the rest:
        its cache holds ``[padding][prefix][padding][rest]``, the mask marks the gap, and the
        positions count real tokens only, so the rest sees what a full prefill would give."""
        cache = DynamicCache(config=self.model.config)
        reused = self._reuse(names, prompts, cache)
        rests = [p[n:] for p, n in zip(prompts, reused, strict=True)]
        past, width = max(reused), max(len(r) for r in rests)
        ids = torch.tensor([[self.pad_id] * (width - len(r)) + r for r in rests],
                           device=self.device)
        mask = torch.tensor([[0] * (past - n) + [1] * n + [0] * (width - len(r)) + [1] * len(r)
                             for n, r in zip(reused, rests, strict=True)], device=self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, past:]
        logits = self._forward(ids, mask, positions, cache, names)
        tokens = pick_tokens(logits, settings)
        self._merge(cache, mask)
        self.rows += rows
        self.names += names
        self.settings += settings
        self.last = torch.cat([self.last, tokens[:, None]])
        return tokens

    def step(self) -> torch.Tensor:
        """One new token for every row."""
        self.mask = torch.cat([self.mask, self.mask.new_ones((len(self.rows), 1))], dim=1)
        positions = self.mask.sum(-1, keepdim=True) - 1
        logits = self._forward(self.last, self.mask, positions, self.cache, self.names)
        tokens = pick_tokens(logits, self.settings)
        self.last = tokens[:, None]
        return tokens

    def fed(self, index: int) -> KV:
        """Row ``index``'s keys and values for every token it has fed the model (views)."""
        columns = self.mask[index].nonzero().squeeze(-1)
        return [(layer.keys[index][:, columns], layer.values[index][:, columns])
                for layer in self.cache.layers]

    def _reuse(self, names: list[str], prompts: list[list[int]], cache: DynamicCache
               ) -> list[int]:
        """Fill ``cache`` with the stored prefixes of these prompts, left-padded to one
        width; how many tokens of each prompt they cover (0: none stored)."""
        if self.prefixes is None or not all(type(layer) is DynamicLayer
                                            for layer in cache.layers):
            return [0] * len(prompts)
        hits = [self.prefixes.lookup(n, p) for n, p in zip(names, prompts, strict=True)]
        lengths = [0 if hit is None else hit[0] for hit in hits]
        past = max(lengths)
        if past == 0:
            return lengths
        some = next(hit[1] for hit in hits if hit is not None)
        for index in range(len(cache.layers)):
            keys, values = [], []
            for hit in hits:
                # a row with nothing stored: no columns, all padding after the left pad
                k, v = hit[1][index] if hit else (some[index][0][:, :0], some[index][1][:, :0])
                keys.append(_left_pad(k[None], past, 2))
                values.append(_left_pad(v[None], past, 2))
            cache.update(torch.cat(keys), torch.cat(values), index)
        return lengths

    def keep(self, indices: list[int]) -> None:
        """Keep only these rows, and drop cache columns that are padding in every one left."""
        if len(indices) == len(self.rows):
            return
        self.rows = [self.rows[i] for i in indices]
        self.names = [self.names[i] for i in indices]
        self.settings = [self.settings[i] for i in indices]
        if not indices:
            self.cache, self.mask, self.last = None, self.mask[:0, :0], self.last[:0]
            return
        index = torch.tensor(indices, device=self.device)
        self.mask, self.last = self.mask[index], self.last[index]
        start = int(self.mask.any(0).nonzero()[0])
        self.mask = self.mask[:, start:]
        for layer in self.cache.layers:
            layer.keys = layer.keys[index, :, start:]
            layer.values = layer.values[index, :, start:]

    def _merge(self, cache: DynamicCache, mask: torch.Tensor) -> None:
        if self.cache is None:
            self.cache, self.mask = cache, mask
            return
        width = max(self.mask.shape[1], mask.shape[1])
        for old, new in zip(self.cache.layers, cache.layers, strict=True):
            old.keys = torch.cat([_left_pad(old.keys, width, 2), _left_pad(new.keys, width, 2)])
            old.values = torch.cat([_left_pad(old.values, width, 2),
                                    _left_pad(new.values, width, 2)])
        self.mask = torch.cat([_left_pad(self.mask, width, 1), _left_pad(mask, width, 1)])

    @torch.inference_mode()
    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor,
                 cache: DynamicCache, names: list[str]) -> torch.Tensor:
        extra = self.scope(names)
        output = self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                            past_key_values=cache, use_cache=True, logits_to_keep=1, **extra)
        return output.logits[:, -1, :]
