"""Train/validation/test splits with no leakage: near-duplicates travel together.

Examples whose questions or answers are the same (after normalisation), nearly the same
(MinHash estimate of character-shingle Jaccard similarity at or above a threshold) or share a
long run of words (a templated answer filled in with another name) are joined into one group,
and a group lands in one split. Groups are then dealt out per stratum (topic or
any other column) so each split holds its share of every stratum.
"""

from __future__ import annotations

import random
import re
import zlib
from collections import defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from curation.errors import CurationError

SPLITS = ("train", "validation", "test")
_WORD = re.compile(r"\w+")
_PRIME = (1 << 61) - 1
_MAX_HASH = (1 << 32) - 1


def normalize(text: str) -> str:
    """Lower-case words only: punctuation, case and spacing don't make a question new."""
    return " ".join(_WORD.findall(text.lower()))


class NearDuplicateIndex:
    """MinHash with LSH banding over character shingles, vectorised with numpy.

    The defaults (16 bands of 4 rows) make a pair at Jaccard 0.8 a candidate with probability
    0.9998 (0.99 at 0.7); each candidate's exact Jaccard is then checked against the threshold.
    """

    def __init__(self, threshold: float = 0.8, shingle: int = 5, bands: int = 16, rows: int = 4,
                 seed: int = 1) -> None:
        if not 0 < threshold <= 1:
            raise CurationError(f"near-duplicate threshold must be in (0, 1], got {threshold}")
        self.threshold, self.shingle, self.bands, self.rows = threshold, shingle, bands, rows
        rng = np.random.default_rng(seed)  # fixed: the grouping must not depend on the split seed
        n = bands * rows
        self._a = rng.integers(1, _PRIME, n, dtype=np.uint64)
        self._b = rng.integers(0, _PRIME, n, dtype=np.uint64)

    def shingles(self, text: str) -> set[str]:
        norm, k = normalize(text), self.shingle
        return {norm[i:i + k] for i in range(max(1, len(norm) - k + 1))}

    def signature(self, shingles: set[str]) -> np.ndarray:
        hashes = np.fromiter((zlib.crc32(s.encode()) for s in shingles), dtype=np.uint64)
        # (a*x + b) mod p on 32-bit x and 61-bit a overflows 64 bits; numpy wraps, which is a
        # fine hash family here (the same wrap for every text), and keeps it vectorised.
        permuted = (np.outer(hashes, self._a) + self._b) % np.uint64(_PRIME)
        return (permuted & np.uint64(_MAX_HASH)).min(axis=0)

    def groups(self, texts: Sequence[str]) -> list[tuple[int, int]]:
        """Pairs (i, j), i < j, of near-duplicate texts (exact Jaccard of LSH candidates)."""
        shingle_sets = [self.shingles(t) for t in texts]
        signatures = [self.signature(s) for s in shingle_sets]
        buckets: dict[tuple[int, bytes], list[int]] = defaultdict(list)
        for i, sig in enumerate(signatures):
            for band in range(self.bands):
                key = sig[band * self.rows:(band + 1) * self.rows].tobytes()
                buckets[(band, key)].append(i)
        pairs: set[tuple[int, int]] = set()
        checked: set[tuple[int, int]] = set()
        # The signature estimate is cheap; only candidates it puts near the threshold get the
        # exact (set) Jaccard. 0.15 is ~3 standard errors of a 64-permutation estimate.
        floor = self.threshold - 0.15
        for members in buckets.values():
            if len(members) < 2:
                continue
            stacked = np.stack([signatures[i] for i in members])
            for pos, i in enumerate(members[:-1]):
                agree = (stacked[pos + 1:] == stacked[pos]).mean(axis=1)
                for offset in np.flatnonzero(agree >= floor):
                    j = members[pos + 1 + int(offset)]
                    if (i, j) in checked:
                        continue
                    checked.add((i, j))
                    if _jaccard(shingle_sets[i], shingle_sets[j]) >= self.threshold:
                        pairs.add((i, j))
        return sorted(pairs)


def _jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        a, b = self.find(i), self.find(j)
        if a != b:
            self.parent[max(a, b)] = min(a, b)


def shared_run_pairs(texts: Sequence[str], words: int) -> list[tuple[int, int]]:
    """Pairs (i, j), i < j, where text j repeats a run of ``words`` normalised words that text i
    (the first to hold it) has; chained through union-find they join every text of a template.

    Sites fill one sentence with many names ("Eating, diet, and nutrition have not been shown to
    play a role in causing or preventing X."). Such answers differ by a name, so character
    Jaccard puts them below any safe threshold, yet a model that saw one in training recites
    the next one in test: the ROUGE-L of two of them is about 0.9.
    """
    first_with: dict[str, int] = {}
    pairs: set[tuple[int, int]] = set()
    for i, text in enumerate(texts):
        tokens = normalize(text).split()
        for start in range(len(tokens) - words + 1):
            key = " ".join(tokens[start:start + words])
            owner = first_with.setdefault(key, i)
            if owner != i:
                pairs.add((owner, i))
    return sorted(pairs)


def duplicate_groups(fields: Sequence[Sequence[str]], threshold: float = 0.8,
                     shared_words: int = 0) -> list[int]:
    """A group id per example: examples sharing a near-duplicate in any field share a group, and
    so do examples whose texts in one field share a run of ``shared_words`` words (0: no check).

    ``fields`` is one sequence of texts per field (e.g. questions, answers), all the same length.
    Group ids are the smallest example index in the group, so they don't depend on any seed.
    """
    n = len(fields[0]) if fields else 0
    uf = _UnionFind(n)
    index = NearDuplicateIndex(threshold)
    for texts in fields:
        first_of: dict[str, int] = {}
        for i, text in enumerate(texts):
            key = normalize(text)
            if key in first_of:
                uf.union(first_of[key], i)
            else:
                first_of[key] = i
        if threshold < 1:
            for i, j in index.groups(texts):
                uf.union(i, j)
        if shared_words:
            for i, j in shared_run_pairs(texts, shared_words):
                uf.union(i, j)
    return [uf.find(i) for i in range(n)]


@dataclass(frozen=True)
class SplitPlan:
    assignment: list[str]  # a split name per example
    groups: int
    grouped_examples: int  # examples that share their group with another


def _quotas(sizes: dict[Hashable, int], fraction: float) -> dict[Hashable, int]:
    """Per-stratum counts that sum to round(total * fraction): floors, then largest remainders."""
    total = round(sum(sizes.values()) * fraction)
    exact = {s: n * fraction for s, n in sizes.items()}
    quota = {s: int(v) for s, v in exact.items()}
    by_remainder = sorted(sizes, key=lambda s: (-(exact[s] - quota[s]), str(s)))
    for s in by_remainder[:max(0, total - sum(quota.values()))]:
        quota[s] += 1
    return quota


def plan_split(group_ids: Sequence[int], strata: Sequence[Hashable], *,
               validation_fraction: float, test_fraction: float, seed: int) -> SplitPlan:
    """Deal whole groups into train/validation/test, stratum by stratum.

    A group's stratum is that of its first example. A requested test split never comes out
    empty and the train split never does, as long as there are at least two groups.
    """
    if not 0 <= test_fraction < 1 or not 0 <= validation_fraction < 1 \
            or test_fraction + validation_fraction >= 1:
        raise CurationError("test and validation fractions must each be in [0, 1) and sum to "
                           f"less than 1, got {test_fraction} and {validation_fraction}; try 0.1")
    members: dict[int, list[int]] = defaultdict(list)
    for i, g in enumerate(group_ids):
        members[g].append(i)
    by_stratum: dict[Hashable, list[int]] = defaultdict(list)
    for g in sorted(members):
        by_stratum[strata[g]].append(g)
    rng = random.Random(seed)
    for stratum in sorted(by_stratum, key=str):
        rng.shuffle(by_stratum[stratum])
    sizes = {s: len(gs) for s, gs in by_stratum.items()}
    n_test, n_val = _quotas(sizes, test_fraction), _quotas(sizes, validation_fraction)
    _keep_splits_nonempty(sizes, n_test, n_val, test_fraction, validation_fraction)

    split_of_group: dict[int, str] = {}
    for stratum, gs in by_stratum.items():
        t, v = n_test[stratum], n_val[stratum]
        for pos, g in enumerate(gs):
            split_of_group[g] = "test" if pos < t else "validation" if pos < t + v else "train"
    grouped = sum(len(m) for m in members.values() if len(m) > 1)
    return SplitPlan([split_of_group[g] for g in group_ids], len(members), grouped)


def _keep_splits_nonempty(sizes: dict, n_test: dict, n_val: dict, test_fraction: float,
                          validation_fraction: float) -> None:
    total = sum(sizes.values())
    if total < 2:
        for quota in (n_test, n_val):
            quota.update(dict.fromkeys(quota, 0))
        return
    biggest = max(sizes, key=lambda s: (sizes[s], str(s)))
    for quota, fraction in ((n_test, test_fraction), (n_val, validation_fraction)):
        if fraction > 0 and sum(quota.values()) == 0:
            quota[biggest] += 1
    while sum(n_test.values()) + sum(n_val.values()) >= total:  # leave training something
        shrink = n_val if sum(n_val.values()) > 0 and sum(n_val.values()) >= \
            sum(n_test.values()) else n_test
        stratum = max(shrink, key=lambda s: (shrink[s], str(s)))
        shrink[stratum] -= 1
    for s in sizes:  # a stratum's quotas can't exceed its size after the bumps above
        over = n_test[s] + n_val[s] - sizes[s]
        if over > 0:
            n_val[s] -= min(over, n_val[s])
            n_test[s] -= max(0, n_test[s] + n_val[s] - sizes[s])
