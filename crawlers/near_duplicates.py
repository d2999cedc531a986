"""Near-duplicate pages by MinHash/LSH over word shingles (datasketch), stored pages included."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from datasketch import LeanMinHash

_WORD = re.compile(r"\w+")
SHINGLE_WORDS = 3
NUM_PERM = 128
MIN_SHINGLES = 8  # below this a Jaccard estimate says little: short pages are not compared
_MULTIPLIERS = (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0x27D4EB2F165667C5)


def shingle_hashes(text: str, size: int = SHINGLE_WORDS) -> np.ndarray:
    """The distinct 32-bit hashes of the text's word ``size``-shingles (lowercased).

    Each word is hashed once and a shingle's hash combines its words' with odd multipliers, in
    numpy: joining and hashing every shingle's string took most of the check. Python's string
    hash is salted per process, which is enough: the index lives and dies with one crawl.
    """
    words = _WORD.findall(text.lower())
    if len(words) < size:
        return np.empty(0, dtype=np.uint32)
    ids = np.fromiter(map(hash, words), dtype=np.int64, count=len(words)).view(np.uint64)
    combined = np.zeros(len(words) - size + 1, dtype=np.uint64)
    for i, multiplier in enumerate(_MULTIPLIERS[:size]):
        combined = combined * np.uint64(multiplier) + ids[i:len(ids) - size + 1 + i]
    return np.unique((combined ^ (combined >> np.uint64(32))).astype(np.uint32))


class NearDuplicateIndex:
    """An LSH index keyed by page URL; ``match`` names an indexed page that ``text`` nearly equals.

    A page never matches itself (same URL): a re-crawled page is an update, not a duplicate.
    """

    def __init__(self, threshold: float = 0.9, num_perm: int = NUM_PERM) -> None:
        if not 0 < threshold <= 1:
            raise ValueError(f"near-duplicate threshold must be in (0, 1], got {threshold}")
        from datasketch import MinHashLSH  # pulls in scipy: imported only when dedupe is on

        self.num_perm = num_perm
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self.size = 0
        # datasketch's "affine32" permutations h -> a*h + b mod 2^32 (a odd, so bijective),
        # applied here in one numpy expression per page instead of through MinHash.update.
        rng = np.random.RandomState(1)
        self._a = rng.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
        self._b = rng.randint(0, 1 << 32, num_perm, dtype=np.uint64).astype(np.uint32)

    def _minhash(self, text: str) -> LeanMinHash | None:
        from datasketch import LeanMinHash

        grams = shingle_hashes(text)
        if len(grams) < MIN_SHINGLES:
            return None
        signature = (grams[:, None] * self._a + self._b).min(axis=0)
        return LeanMinHash(seed=1, hashvalues=signature, scheme="affine32")

    def add(self, key: str, text: str) -> None:
        minhash = self._minhash(text)
        if minhash is not None and key not in self.lsh:
            self.lsh.insert(key, minhash)
            self.size += 1

    def match(self, key: str, text: str, *, add: bool = False) -> str | None:
        """The first indexed page (by URL) nearly equal to ``text``; ``add`` indexes it if none."""
        minhash = self._minhash(text)
        if minhash is None:
            return None
        others = sorted(k for k in self.lsh.query(minhash) if k != key)
        if others:
            return others[0]
        if add and key not in self.lsh:
            self.lsh.insert(key, minhash)
            self.size += 1
        return None
