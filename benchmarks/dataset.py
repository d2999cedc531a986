"""Snapshot build time for 50,000 QA pairs (no embedding) and MiniLM embedding throughput.

    python benchmarks/dataset.py [--pairs 50000] [--sentences 2000]

Synthesizes the pairs into a temporary SQLite store, so it touches nothing of yours.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# A few thousand pseudo-words: a vocabulary as small as a real one's common words would make
# every text a near-duplicate of every other, which no real corpus looks like.
_rng = random.Random(42)
WORDS = ["".join(_rng.choice("aeioubcdfglmnprstv") for _ in range(_rng.randint(3, 9)))
         for _ in range(5000)]


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize()


def synthesize(n: int, seed: int = 0) -> None:
    from sqlalchemy import insert

    from registry.db import session_scope
    from registry.models import QAPair

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        question = f"{_sentence(rng, 10)} {i}?"
        answer = f"{_sentence(rng, rng.randint(20, 120))}."
        rows.append({"question": question, "answer": answer, "source": "https://bench.test/",
                     "topic": f"topic-{i % 20}", "focus_area": None, "qtype": None,
                     "content_hash": hashlib.sha256(f"{question}\n{answer}".encode()).hexdigest()})
    with session_scope() as session:
        session.execute(insert(QAPair), rows)


def bench_build(n: int) -> tuple[float, dict]:
    from core.settings import get_settings
    from curation.build import build_snapshot
    from registry import db
    from registry.snapshots import find_snapshot

    with tempfile.TemporaryDirectory() as home:
        os.environ["LORAFORGE_HOME"] = home
        os.environ.pop("LORAFORGE_DATABASE_URL", None)
        get_settings.cache_clear()
        db.get_engine.cache_clear()
        db.upgrade()
        synthesize(n)
        start = time.perf_counter()
        build_snapshot(name="bench", validation_fraction=0.05)
        seconds = time.perf_counter() - start
        counts = find_snapshot("bench").counts
        db.get_engine().dispose()
        return seconds, counts


def bench_embedding(n: int) -> tuple[float, str]:
    from curation.diversity import embed, load_encoder

    rng = random.Random(1)
    texts = [f"{_sentence(rng, 10)}?\n{_sentence(rng, 40)}." for _ in range(n)]
    encoder = load_encoder()
    embed(texts[:64], encoder)  # warm-up
    start = time.perf_counter()
    embed(texts, encoder)
    return n / (time.perf_counter() - start), str(encoder.device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=50_000, help="QA pairs to build from.")
    parser.add_argument("--sentences", type=int, default=2_000, help="Sentences to embed.")
    args = parser.parse_args()
    seconds, counts = bench_build(args.pairs)
    rate, device = bench_embedding(args.sentences)
    print(f"{'measure':<44} {'value':>12}")
    print(f"{'snapshot build, ' + str(args.pairs) + ' QA pairs (s)':<44} {seconds:>12.1f}")
    print(f"{'  pairs/s':<44} {args.pairs / seconds:>12.0f}")
    print(f"{'  train / validation / test':<44} "
          f"{counts['train']:>6}/{counts['validation']}/{counts['test']}")
    print(f"{'MiniLM embedding on ' + device + ' (sentences/s)':<44} {rate:>12.0f}")


if __name__ == "__main__":
    main()
