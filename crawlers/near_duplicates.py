"""Near-duplicate pages by MinHash/LSH over word shingles (datasketch), stored pages included."""

from __future__ import annotations

import re
import zlib
from functools import cache
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from datasketch import LeanMinHash

_WORD = re.compile(r"\w+")
SHINGLE_WORDS = 3
NUM_PERM = 128
MIN_SHINGLES = 8  # below this a Jaccard estimate says little: short pages are not compared
LSH_WEIGHTS = (0.1, 0.9)  # datasketch's (false positive, false negative) weights
_MULTIPLIERS = (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0x27D4EB2F165667C5)


def shingle_hashes(text: str, size: int = SHINGLE_WORDS) -> np.ndarray:
    """The distinct 32-bit hashes of the text's word ``size``-shingles (lowercased).

    Each word is hashed once (CRC-32: the same in every process, so page workers and the crawl
    agree) and a shingle's hash combines its words' with odd multipliers, in numpy: joining and
    hashing every shingle's string took most of the check.
    """
    words = _WORD.findall(text.lower())
    if len(words) < size:
        return np.empty(0, dtype=np.uint32)
    ids = np.fromiter((zlib.crc32(w.encode()) for w in words), dtype=np.uint64, count=len(words))
    combined = np.zeros(len(words) - size + 1, dtype=np.uint64)
    for i, multiplier in enumerate(_MULTIPLIERS[:size]):
        combined = combined * np.uint64(multiplier) + ids[i:len(ids) - size + 1 + i]
    return np.unique((combined ^ (combined >> np.uint64(32))).astype(np.uint32))


@cache
def _permutations(num_perm: int) -> tuple[np.ndarray, np.ndarray]:
    """datasketch's "affine32" permutations h -> a*h + b mod 2^32 (a odd, so bijective), fixed
    by their seed so that every process computes the same signature."""
    rng = np.random.RandomState(1)
    a = rng.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = rng.randint(0, 1 << 32, num_perm, dtype=np.uint64).astype(np.uint32)
    return a, b


def signature(text: str, num_perm: int = NUM_PERM) -> np.ndarray | None:
    """The text's MinHash signature, in one numpy expression; None when it is too short to
    compare. Page workers compute it beside the extraction (crawlers/page_work.py)."""
    grams = shingle_hashes(text)
    if len(grams) < MIN_SHINGLES:
        return None
    a, b = _permutations(num_perm)
    return (grams[:, None] * a + b).min(axis=0)


class NearDuplicateIndex:
    """An LSH index keyed by page URL; ``match`` names an indexed page that ``text`` nearly equals.

    A page never matches itself (same URL): a re-crawled page is an update, not a duplicate.
    """

    def __init__(self, threshold: float = 0.9, num_perm: int = NUM_PERM) -> None:
        if not 0 < threshold <= 1:
            raise ValueError(f"near-duplicate threshold must be in (0, 1], got {threshold}")
        from datasketch import MinHashLSH  # pulls in scipy: imported only when dedupe is on

        self.num_perm = num_perm
        self.threshold = threshold
        # LSH's banding tuned for recall (with the default weights a page at Jaccard 0.92 was
        # missed half the time at threshold 0.9); the candidates it adds are then checked
        # against the threshold on their signatures, so no distinct page is dropped for them.
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=LSH_WEIGHTS)
        self.signatures: dict[str, np.ndarray] = {}
        self.size = 0

    def _minhash(self, text: str, known: np.ndarray | None = None) -> LeanMinHash | None:
        from datasketch import LeanMinHash

        values = known if known is not None and len(known) == self.num_perm \
            else signature(text, self.num_perm)
        return None if values is None else LeanMinHash(seed=1, hashvalues=values,
                                                       scheme="affine32")

    def _insert(self, key: str, minhash: LeanMinHash) -> None:
        if key not in self.signatures:
            self.lsh.insert(key, minhash)
            self.signatures[key] = minhash.hashvalues
            self.size += 1

    def add(self, key: str, text: str) -> None:
        minhash = self._minhash(text)
        if minhash is not None:
            self._insert(key, minhash)

    def match(self, key: str, text: str, *, add: bool = False,
              known: np.ndarray | None = None) -> str | None:
        """The first indexed page (by URL) nearly equal to ``text``; ``add`` indexes it if none.
        ``known`` is the text's ``signature`` when it was computed already."""
        minhash = self._minhash(text, known)
        if minhash is None:
            return None
        values = minhash.hashvalues
        others = sorted(k for k in self.lsh.query(minhash) if k != key
                        and (self.signatures[k] == values).mean() >= self.threshold)
        if others:
            return others[0]
        if add:
            self._insert(key, minhash)
        return None
