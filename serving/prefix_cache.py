"""Keys and values of prompts already computed, reused when a new prompt starts the same way.

In a chat, each turn's prompt is the previous turn's prompt and reply plus the new message; on
2 CPU cores a prefill is compute bound (about 7 ms a token for SmolLM2), so without reuse the
wait for the first token grows with the conversation. Each row that finishes leaves the keys and
values of everything it fed the model (its prompt and its reply but the last token) here, per
adapter; a new prompt on the same adapter that shares a prefix with an entry is prefilled from
where the shared part ends (``DecodeBatch.admit``). A system prompt shared by many users is
reused the same way.

The keys and values of a prefix do not depend on what follows it (attention is causal and
positions count from the start), so reuse computes what a full prefill would, up to float
rounding from the different batch shapes: the same kind of difference as between a reply
decoded alone and in a batch.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch

# Shorter shared prefixes are not worth a lookup and a copy.
MIN_REUSE_TOKENS = 8
# A lookup compares the prompt with every entry of its adapter: bound their number as well as
# their bytes (a small model's entries are small, and thousands would fit).
MAX_ENTRIES = 256

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: (keys, values), [heads, tokens, dim]


@dataclass(frozen=True)
class _Entry:
    ids: tuple[int, ...]
    layers: KV
    nbytes: int


def _shared(a: tuple[int, ...], b: list[int]) -> int:
    """How many leading tokens ``a`` and ``b`` have in common."""
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))


class PrefixCache:
    """A least-recently-used store of (adapter, token ids) -> per-layer keys and values, within
    ``max_bytes`` and ``max_entries``."""

    def __init__(self, max_bytes: int, max_entries: int = MAX_ENTRIES) -> None:
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.nbytes = 0
        self.hits = 0  # prompts that reused a prefix
        self.reused_tokens = 0  # prompt tokens not computed again
        self._entries: OrderedDict[tuple[str, tuple[int, ...]], _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, adapter: str, ids: list[int]) -> tuple[int, KV] | None:
        """The longest stored prefix of ``ids`` on this adapter, leaving at least the last token
        to compute (its logits give the first new token): (its length, its keys and values)."""
        best, found = 0, None
        for (name, _), entry in self._entries.items():
            if name == adapter:
                shared = min(_shared(entry.ids, ids), len(ids) - 1)
                if shared > best:
                    best, found = shared, entry
        if found is None or best < MIN_REUSE_TOKENS:
            return None
        self._entries.move_to_end((adapter, found.ids))
        self.hits += 1
        self.reused_tokens += best
        return best, [(k[:, :best], v[:, :best]) for k, v in found.layers]

    def store(self, adapter: str, ids: list[int], layers: KV) -> None:
        """Keep the keys and values of ``ids`` (copied: the batch's cache is reused in place),
        replacing entries they extend, and drop the least recently used beyond ``max_bytes``."""
        key = (adapter, tuple(ids))
        nbytes = sum(k.numel() * k.element_size() * 2 for k, _ in layers)
        if len(ids) < MIN_REUSE_TOKENS or nbytes > self.max_bytes or key in self._entries:
            return
        for old in [k for k in self._entries if k[0] == adapter and key[1][:len(k[1])] == k[1]]:
            self._drop(old)  # a prefix of this one: everything it could give, this gives
        layers = [(k.clone(), v.clone()) for k, v in layers]
        self._entries[key] = _Entry(key[1], layers, nbytes)
        self.nbytes += nbytes
        while self.nbytes > self.max_bytes or len(self._entries) > self.max_entries:
            self._drop(next(iter(self._entries)))

    def forget(self, adapter: str) -> None:
        """Drop an adapter's entries (it was detached)."""
        for key in [k for k in self._entries if k[0] == adapter]:
            self._drop(key)

    def _drop(self, key: tuple[str, tuple[int, ...]]) -> None:
        self.nbytes -= self._entries.pop(key).nbytes
