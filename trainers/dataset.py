"""Build a dataset snapshot: QA pairs from the store → single-turn chats → train/test jsonl.

A snapshot is reproducible: the same QA pairs, parameters and seed give the same split and the
same content hash, which is also what the default name is made from.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

from registry import snapshots
from registry.db import ensure_schema
from registry.models import Split
from registry.settings import get_settings
from trainers.errors import TrainerError

SNAPSHOT_KIND = "qa-chat"


def to_messages(question: str, answer: str | None, system_prompt: str | None = None) -> list[dict]:
    """One single-turn chat; without ``answer`` it is the prompt to generate from."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages.append({"role": "user", "content": question.strip()})
    if answer is not None:
        messages.append({"role": "assistant", "content": answer.strip()})
    return messages


def split_ids(ids: list[int], test_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Shuffle with ``seed`` and cut off the test share; both parts come back sorted."""
    shuffled = sorted(ids)
    random.Random(seed).shuffle(shuffled)
    n_test = round(len(shuffled) * test_fraction)
    if test_fraction > 0 and len(shuffled) >= 2:
        n_test = max(n_test, 1)  # a requested test split should never come out empty
    n_test = min(n_test, len(shuffled) - 1)  # and the training split never
    return sorted(shuffled[n_test:]), sorted(shuffled[:n_test])


def _content_hash(params: dict[str, Any], members: list[tuple[str, str]]) -> str:
    payload = json.dumps({"params": params, "members": sorted(members)}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def _length_stats(rows: list[snapshots.QAPairData]) -> dict[str, Any]:
    # Word counts, not tokens: the snapshot must not depend on any one tokenizer.
    q = [len(r.question.split()) for r in rows]
    a = [len(r.answer.split()) for r in rows]
    return {
        "unit": "words",
        "question_mean": round(statistics.fmean(q), 1), "question_max": max(q),
        "answer_mean": round(statistics.fmean(a), 1), "answer_max": max(a),
    }


def _write_jsonl(path: Path, rows: list[snapshots.QAPairData], system_prompt: str | None) -> None:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps({"messages": to_messages(row.question, row.answer, system_prompt)},
                               ensure_ascii=False) + "\n")


def drop_repeated_questions(
    pairs: list[snapshots.QAPairData],
) -> tuple[list[snapshots.QAPairData], int]:
    """Keep the first pair of each question (case and spacing ignored); return the drop count.

    MedQuAD asks "What is (are) X ?" of several sections of one page. The same prompt with
    different targets teaches a model nothing but averaging, and would leak across a split.
    """
    seen: set[str] = set()
    kept = []
    for pair in pairs:
        key = " ".join(pair.question.lower().split())
        if key not in seen:
            seen.add(key)
            kept.append(pair)
    return kept, len(pairs) - len(kept)


def _check_params(test_fraction: float, limit: int | None, max_answer_words: int | None) -> None:
    if max_answer_words is not None and max_answer_words < 1:
        raise TrainerError(f"max answer words must be at least 1, got {max_answer_words}")
    if not 0 <= test_fraction < 1:
        raise TrainerError(f"test fraction must be in [0, 1), got {test_fraction}; try 0.1")
    if limit is not None and limit < 1:
        raise TrainerError(f"limit must be at least 1, got {limit}; leave it out to use every pair")


def build_snapshot(
    name: str | None = None,
    test_fraction: float = 0.1,
    seed: int = 0,
    limit: int | None = None,
    system_prompt: str | None = None,
    topic: str | None = None,
    max_answer_words: int | None = None,
) -> int:
    """Freeze the store's QA pairs into a named train/test snapshot; returns its id.

    With ``limit`` a seeded sample of that many pairs is taken. Building the same snapshot twice
    returns the existing one; reusing a name for different content is an error.
    """
    _check_params(test_fraction, limit, max_answer_words)
    ensure_schema()
    pairs, repeated = drop_repeated_questions(snapshots.select_qa_pairs(topic=topic))
    if max_answer_words is not None:
        pairs = [p for p in pairs if len(p.answer.split()) <= max_answer_words]
    if limit is not None and limit < len(pairs):
        pairs = sorted(random.Random(seed).sample(pairs, limit), key=lambda p: p.id)
    if not pairs:
        filters = [f"--topic {topic!r}"] * bool(topic) + [
            f"--max-answer-words {max_answer_words}"] * (max_answer_words is not None)
        if filters:
            raise TrainerError(f"no QA pairs match {' and '.join(filters)}; widen or drop them")
        raise TrainerError("no QA pairs in the store; crawl some first (`loraforge crawl ...`)")

    train_ids, test_ids = split_ids([p.id for p in pairs], test_fraction, seed)
    by_id = {p.id: p for p in pairs}
    train, test = [by_id[i] for i in train_ids], [by_id[i] for i in test_ids]
    params = {"test_fraction": test_fraction, "limit": limit, "system_prompt": system_prompt,
              "topic": topic, "max_answer_words": max_answer_words, "format": "messages"}
    content_hash = _content_hash(
        {**params, "seed": seed},
        [(p.content_hash, "train") for p in train] + [(p.content_hash, "test") for p in test],
    )
    name = name or f"qa-{content_hash[:8]}"

    existing = snapshots.find_snapshot(name)
    if existing is not None:
        if existing.content_hash == content_hash:
            return existing.id
        raise TrainerError(f"a different snapshot is already called {name!r}; pick another --name")

    final_dir = get_settings().datasets_dir / name
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    # Files go to a temp dir first and are renamed in place, so a crash leaves no half snapshot.
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=final_dir.parent))
    try:
        _write_jsonl(tmp_dir / "train.jsonl", train, system_prompt)
        _write_jsonl(tmp_dir / "test.jsonl", test, system_prompt)
        if final_dir.exists():  # left over from a store that was reset
            shutil.rmtree(final_dir)
        tmp_dir.rename(final_dir)
        return snapshots.create_snapshot(
            name=name, kind=SNAPSHOT_KIND, params=params, seed=seed, content_hash=content_hash,
            counts={"train": len(train), "test": len(test), "total": len(pairs),
                    "repeated_questions_dropped": repeated},
            token_stats=_length_stats(pairs), path=str(final_dir),
            members=[(i, Split.train) for i in train_ids] + [(i, Split.test) for i in test_ids],
        )
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        shutil.rmtree(final_dir, ignore_errors=True)
        raise
