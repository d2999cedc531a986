"""Splits without leakage: planted exact and near-duplicates never straddle a split."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest

from curation.build import build_snapshot
from curation.errors import CurationError
from curation.splits import duplicate_groups, normalize, plan_split
from registry.db import session_scope
from registry.models import QAPair
from registry.snapshots import find_snapshot

WORDS = ("pain swelling joint blood sugar vision loss memory sleep diet exercise heart lung "
         "kidney liver skin bone muscle nerve fever cough rash dose tablet doctor nurse test "
         "scan risk age family gene cell brain eye ear").split()


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def _nudge(text: str) -> str:
    """A near-duplicate: one word misspelt, and the punctuation and case changed."""
    words = text.split()
    words[len(words) // 2] += "s"
    return " ".join(words).upper().replace(".", " !")


def _planted(n_distinct: int = 80, seed: int = 0) -> tuple[list[tuple[str, str]], list[tuple]]:
    """Distinct QA pairs plus planted copies; returns the pairs and the (i, j) that must travel
    together."""
    rng = random.Random(seed)
    pairs = [(_sentence(rng, 14)[:-1] + "?", _sentence(rng, 40)) for _ in range(n_distinct)]
    together = []
    for i in range(0, 30, 3):  # near-duplicate question, different answer
        pairs.append((_nudge(pairs[i][0]), _sentence(rng, 40)))
        together.append((i, len(pairs) - 1))
    for i in range(1, 30, 3):  # new question, the same answer re-punctuated
        pairs.append((_sentence(rng, 8), pairs[i][1].replace(" ", "  ").lower()))
        together.append((i, len(pairs) - 1))
    for i in range(2, 30, 3):  # new question, near-duplicate answer
        pairs.append((_sentence(rng, 8), _nudge(pairs[i][1])))
        together.append((i, len(pairs) - 1))
    return pairs, together


@pytest.mark.parametrize("shared_words", [0, 10])
def test_duplicate_groups_join_planted_copies_and_nothing_else(shared_words):
    pairs, together = _planted()
    groups = duplicate_groups([[q for q, _ in pairs], [a for _, a in pairs]],
                              shared_words=shared_words)
    for i, j in together:
        assert groups[i] == groups[j]
    assert len(set(groups)) == len(pairs) - len(together)


@pytest.mark.parametrize("seed", range(5))
def test_planted_duplicates_never_straddle_a_split(seed):
    pairs, together = _planted(seed=seed)
    groups = duplicate_groups([[q for q, _ in pairs], [a for _, a in pairs]])
    strata = ["a" if i % 3 else "b" for i in range(len(pairs))]
    plan = plan_split(groups, strata, validation_fraction=0.2, test_fraction=0.3, seed=seed)
    for i, j in together:
        assert plan.assignment[i] == plan.assignment[j]
    assert {s: plan.assignment.count(s) for s in set(plan.assignment)}.keys() == {
        "train", "validation", "test"}


def test_split_is_stratified_by_the_column():
    groups = list(range(100))
    strata = ["common"] * 80 + ["rare"] * 20
    plan = plan_split(groups, strata, validation_fraction=0.1, test_fraction=0.2, seed=0)
    rare = [s for s, stratum in zip(plan.assignment, strata, strict=True) if stratum == "rare"]
    assert (rare.count("test"), rare.count("validation"), rare.count("train")) == (4, 2, 14)
    assert plan.assignment.count("test") == 20 and plan.assignment.count("validation") == 10


def test_fractions_that_leave_no_training_data_are_refused():
    with pytest.raises(CurationError, match="sum to less than 1"):
        plan_split([0, 1], ["x", "x"], validation_fraction=0.5, test_fraction=0.5, seed=0)


def _insert(pairs: list[tuple[str, str]]) -> None:
    with session_scope() as session:
        for n, (question, answer) in enumerate(pairs):
            session.add(QAPair(question=question, answer=answer, source="https://x.test/a",
                               topic="general" if n % 4 else "rare",
                               content_hash=hashlib.sha256(f"{question}\n{answer}".encode())
                               .hexdigest()))


def _rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_snapshot_keeps_planted_duplicates_on_one_side(home):
    pairs, _ = _planted()
    _insert(pairs)
    build_snapshot(name="leak", seed=3, test_fraction=0.3, validation_fraction=0.2)
    snap = find_snapshot("leak")
    sides = {}
    for split in ("train", "validation", "test"):
        for row in _rows(Path(snap.path) / f"{split}.jsonl"):
            user, reply = (m["content"] for m in row["messages"])
            sides.setdefault(split, set()).update({normalize(user), normalize(reply)})
    assert snap.counts["grouped_examples"] == 60 and snap.counts["validation"] > 0
    # No exact text (after normalisation) on two sides ...
    assert not sides["train"] & sides["test"] and not sides["train"] & sides["validation"]
    assert not sides["validation"] & sides["test"]
    # ... and no near-duplicate either: each planted copy sits with its original.
    groups = duplicate_groups([[q for q, _ in pairs], [a for _, a in pairs]])
    split_of = {}
    for split, texts in sides.items():
        for i, (q, _) in enumerate(pairs):
            if normalize(q) in texts:
                split_of[i] = split
    for i, g in enumerate(groups):
        assert split_of[i] == split_of[g]


def test_templated_answers_filled_with_other_names_stay_on_one_side():
    """NIDDK answers one question type with one sentence and the condition's name. Their
    character Jaccard is about 0.7, under the near-duplicate threshold, yet an adapter that saw
    one in training recites the next one in test (ROUGE-L about 0.9)."""
    from crawlers.demo_site.medquad import load_documents

    template = "have not been shown to play a role in causing or preventing"
    pairs = [(qa.question, " ".join(b for b in qa.answer_blocks if isinstance(b, str)))
             for doc in load_documents() if doc.collection == "niddk" for qa in doc.qa_pairs]
    templated = [(q, a) for q, a in pairs if template in a and len(a.split()) < 25]
    others = [(q, a) for q, a in pairs if "nutrition" not in a.lower()][:60]
    assert len(templated) >= 5
    chosen = templated + others
    fields = [[q for q, _ in chosen], [a for _, a in chosen]]

    groups = duplicate_groups(fields, shared_words=10)
    assert len({groups[i] for i in range(len(templated))}) == 1
    plan = plan_split(groups, [None] * len(chosen), validation_fraction=0, test_fraction=0.3,
                      seed=0)
    assert len(set(plan.assignment[:len(templated)])) == 1
    assert len(set(duplicate_groups(fields)[:len(templated)])) > 1  # the character check alone
