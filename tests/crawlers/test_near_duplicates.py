"""Near-duplicate detection: recall just above the threshold, nothing below it, the same
signature in a page worker as in the crawl, and datasketch's own banding."""

from __future__ import annotations

import random

import pytest

from crawlers.near_duplicates import (
    LSH_WEIGHTS,
    NearDuplicateIndex,
    lsh_bands,
    shingle_hashes,
    signature,
)
from crawlers.offload import Offload

WORDS = [f"w{i}" for i in range(5000)]


def _page(rng: random.Random, n: int = 300) -> list[str]:
    return [rng.choice(WORDS) for _ in range(n)]


def _jaccard(a: str, b: str) -> float:
    x, y = set(shingle_hashes(a).tolist()), set(shingle_hashes(b).tolist())
    return len(x & y) / len(x | y)


def test_copies_above_the_threshold_are_caught_and_pages_below_it_are_not() -> None:
    rng = random.Random(7)
    index = NearDuplicateIndex(threshold=0.9)
    caught = kept = 0
    for i in range(60):
        words = _page(rng)
        original = " ".join(words)
        assert index.match(f"http://a.test/{i}", original, add=True) is None
        close, far = list(words), list(words)
        close[150] = "changed"  # one word of 300: three shingles differ, Jaccard about 0.98
        for j in range(0, 300, 12):  # every 12th word: Jaccard about 0.6-0.7
            far[j] = f"x{j}"
        assert _jaccard(original, " ".join(close)) > 0.95
        assert _jaccard(original, " ".join(far)) < 0.8
        caught += index.match(f"http://b.test/{i}", " ".join(close)) == f"http://a.test/{i}"
        kept += index.match(f"http://c.test/{i}", " ".join(far)) is None
    assert caught >= 59 and kept == 60


def test_a_worker_process_computes_the_signature_the_crawl_computes() -> None:
    text = " ".join(_page(random.Random(3)))
    writer = Offload(1)
    try:
        remote = writer.submit(signature, text).result(timeout=60)
    finally:
        writer.close()
    assert (remote == signature(text)).all()


@pytest.mark.parametrize("threshold", [0.5, 0.8, 0.85, 0.9, 0.95])
@pytest.mark.parametrize("weights", [LSH_WEIGHTS, (0.5, 0.5)])
def test_banding_is_the_one_datasketch_chooses(threshold: float, weights) -> None:
    from datasketch import MinHashLSH  # a test dependency: the reference, not the crawl's code

    lsh = MinHashLSH(threshold=threshold, num_perm=128, weights=weights)
    assert lsh_bands(threshold, 128, weights) == (lsh.b, lsh.r)
    index = NearDuplicateIndex(threshold)
    assert (index.bands, index.rows) == lsh_bands(threshold)
