"""Near-duplicate pages by MinHash/LSH over word shingles (datasketch), stored pages included."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datasketch import MinHash

_WORD = re.compile(r"\w+")
SHINGLE_WORDS = 3
NUM_PERM = 128
MIN_SHINGLES = 8  # below this a Jaccard estimate says little: short pages are not compared


def shingles(text: str, size: int = SHINGLE_WORDS) -> set[bytes]:
    words = _WORD.findall(text.lower())
    return {" ".join(words[i:i + size]).encode() for i in range(max(0, len(words) - size + 1))}


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

    def _minhash(self, text: str) -> MinHash | None:
        from datasketch import MinHash

        grams = shingles(text)
        if len(grams) < MIN_SHINGLES:
            return None
        minhash = MinHash(num_perm=self.num_perm)
        minhash.update_batch(grams)
        return minhash

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
