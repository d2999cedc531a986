"""Near-duplicate pages by MinHash/LSH over word shingles, stored pages included.

The signatures follow datasketch's MinHash ("affine32" permutations), and the LSH banding is
the one datasketch's ``MinHashLSH`` picks for the same threshold and weights (a test checks
both against datasketch). The index is our own because importing datasketch pulls in scipy:
0.65 s of the crawl's start, before its first request, for a dict of band hashes.
"""

from __future__ import annotations

import re
import zlib
from collections import defaultdict
from functools import cache

import numpy as np

_WORD = re.compile(r"\w+")
SHINGLE_WORDS = 3
NUM_PERM = 128
MIN_SHINGLES = 8  # below this a Jaccard estimate says little: short pages are not compared
LSH_WEIGHTS = (0.1, 0.9)  # (false positive, false negative) weights, as datasketch takes them
_GRID = 1001  # points per integral in lsh_bands: enough to choose as scipy's quad does
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


@cache
def lsh_bands(threshold: float, num_perm: int = NUM_PERM,
              weights: tuple[float, float] = LSH_WEIGHTS) -> tuple[int, int]:
    """(bands, rows per band) that minimise the weighted areas of false positives (pages below
    ``threshold`` that share a band) and false negatives (pages above it that share none), as
    datasketch's ``MinHashLSH`` chooses them."""
    below = np.linspace(0.0, threshold, _GRID)
    above = np.linspace(threshold, 1.0, _GRID)
    best, choice = float("inf"), (0, 0)
    for bands in range(1, num_perm + 1):
        rows = np.arange(1, num_perm // bands + 1, dtype=float)[:, None]
        # P(a pair at similarity s shares a band) = 1 - (1 - s^rows)^bands
        false_pos = np.trapezoid(1 - (1 - below ** rows) ** bands, below, axis=1)
        false_neg = np.trapezoid((1 - above ** rows) ** bands, above, axis=1)
        error = weights[0] * false_pos + weights[1] * false_neg
        at = int(np.argmin(error))
        if error[at] < best:  # strictly smaller: the first of equals wins, as in datasketch
            best, choice = float(error[at]), (bands, at + 1)
    return choice


class NearDuplicateIndex:
    """An LSH index keyed by page URL; ``match`` names an indexed page that ``text`` nearly equals.

    A page never matches itself (same URL): a re-crawled page is an update, not a duplicate.
    """

    def __init__(self, threshold: float = 0.9, num_perm: int = NUM_PERM) -> None:
        if not 0 < threshold <= 1:
            raise ValueError(f"near-duplicate threshold must be in (0, 1], got {threshold}")
        self.num_perm = num_perm
        self.threshold = threshold
        # Banding tuned for recall (with equal weights a page at Jaccard 0.92 was missed half
        # the time at threshold 0.9); the candidates it adds are then checked against the
        # threshold on their signatures, so no distinct page is dropped for them.
        self.bands, self.rows = lsh_bands(threshold, num_perm)
        self.buckets: list[defaultdict[bytes, list[str]]] = [
            defaultdict(list) for _ in range(self.bands)]
        self.signatures: dict[str, np.ndarray] = {}
        self.size = 0

    def _signature(self, text: str, known: np.ndarray | None = None) -> np.ndarray | None:
        if known is not None and len(known) == self.num_perm:
            return np.asarray(known, dtype=np.uint32)
        return signature(text, self.num_perm)

    def _band_keys(self, values: np.ndarray) -> list[bytes]:
        rows = self.rows
        return [values[i * rows:(i + 1) * rows].tobytes() for i in range(self.bands)]

    def _insert(self, key: str, values: np.ndarray, band_keys: list[bytes]) -> None:
        if key not in self.signatures:
            for bucket, band in zip(self.buckets, band_keys, strict=True):
                bucket[band].append(key)
            self.signatures[key] = values
            self.size += 1

    def add(self, key: str, text: str) -> None:
        values = self._signature(text)
        if values is not None:
            self._insert(key, values, self._band_keys(values))

    def match(self, key: str, text: str, *, add: bool = False,
              known: np.ndarray | None = None) -> str | None:
        """The first indexed page (by URL) nearly equal to ``text``; ``add`` indexes it if none.
        ``known`` is the text's ``signature`` when it was computed already."""
        values = self._signature(text, known)
        if values is None:
            return None
        band_keys = self._band_keys(values)
        candidates = {other for bucket, band in zip(self.buckets, band_keys, strict=True)
                      for other in bucket.get(band, ())}
        others = sorted(k for k in candidates if k != key
                        and (self.signatures[k] == values).mean() >= self.threshold)
        if others:
            return others[0]
        if add:
            self._insert(key, values, band_keys)
        return None
