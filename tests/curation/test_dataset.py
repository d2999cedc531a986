"""Dataset snapshots: reproducible splits, clean failures, files that `datasets` can read."""

from __future__ import annotations

import pytest
from datasets import load_dataset

from core.settings import get_settings
from curation.build import build_snapshot
from curation.errors import CurationError
from registry.models import Split
from registry.snapshots import count_snapshots, find_snapshot, snapshot_member_ids


def test_same_seed_gives_same_hash_and_split(qa_store):
    first = find_snapshot(find_snapshot_name(build_snapshot(name="a", seed=0)))
    again = find_snapshot(find_snapshot_name(build_snapshot(name="b", seed=0)))
    other = find_snapshot(find_snapshot_name(build_snapshot(name="c", seed=1)))

    assert first.content_hash == again.content_hash
    assert snapshot_member_ids(first.id, Split.test) == snapshot_member_ids(again.id, Split.test)
    assert other.content_hash != first.content_hash
    assert snapshot_member_ids(other.id, Split.test) != snapshot_member_ids(first.id, Split.test)
    counts = first.counts
    assert (counts["train"], counts["validation"], counts["test"]) == (36, 0, 4)
    assert (counts["total"], counts["repeated_questions_dropped"]) == (40, 0)
    assert counts["topics"] == {"health": {"train": 36, "test": 4}}


def find_snapshot_name(snapshot_id: int) -> str:
    from registry.snapshots import list_snapshots

    return next(s.name for s in list_snapshots() if s.id == snapshot_id)


def test_default_name_comes_from_the_hash_and_rebuilding_returns_the_same_snapshot(qa_store):
    snapshot_id = build_snapshot(seed=3)
    snap = find_snapshot(None)
    assert snap.id == snapshot_id and snap.name == f"qa-{snap.content_hash[:8]}"
    assert build_snapshot(seed=3) == snapshot_id
    assert count_snapshots() == 1


def test_reusing_a_name_for_different_content_is_refused(qa_store):
    build_snapshot(name="mine", seed=0)
    with pytest.raises(CurationError, match="already called 'mine'"):
        build_snapshot(name="mine", seed=1)


def test_empty_selection_raises_and_leaves_no_snapshot(qa_store):
    with pytest.raises(CurationError,
                       match="no QA pairs match --topic 'health' and --max-answer-words 1;"):
        build_snapshot(topic="health", max_answer_words=1)
    with pytest.raises(CurationError, match="unknown topic 'astronomy'; known: "):
        build_snapshot(topic="astronomy")
    assert count_snapshots() == 0
    datasets_dir = get_settings().datasets_dir
    assert not datasets_dir.exists() or not any(datasets_dir.iterdir())


def test_empty_store_raises(home):
    with pytest.raises(CurationError, match="crawl some first"):
        build_snapshot()
    assert count_snapshots() == 0


@pytest.mark.parametrize("kwargs", [{"test_fraction": 1.0}, {"test_fraction": -0.1},
                                    {"limit": 0}])
def test_bad_parameters_are_refused(qa_store, kwargs):
    with pytest.raises(CurationError):
        build_snapshot(**kwargs)
    assert count_snapshots() == 0


def test_files_are_chats_that_datasets_can_load(qa_store):
    build_snapshot(name="chats", limit=10, system_prompt="You are a careful health assistant.")
    snap = find_snapshot("chats")
    data = load_dataset("json", data_files={"train": f"{snap.path}/train.jsonl",
                                            "test": f"{snap.path}/test.jsonl"})
    assert (len(data["train"]), len(data["test"])) == (9, 1)
    roles = [m["role"] for m in data["train"][0]["messages"]]
    assert roles == ["system", "user", "assistant"]
    assert snap.token_stats["answer_max"] <= 120


def test_topic_selects_by_focus_area(qa_store):
    focus = qa_store[0].focus
    build_snapshot(name="one-topic", topic=focus.upper(), test_fraction=0)
    snap = find_snapshot("one-topic")
    expected = sum(1 for p in qa_store if p.focus == focus)
    assert snap.counts["train"] == expected and snap.counts["test"] == 0


def test_repeated_questions_keep_only_their_first_pair(home):
    from registry.db import session_scope
    from registry.models import QAPair

    with session_scope() as session:
        for i, question in enumerate(["What is (are) Gout ?", "what is (are)  gout ?",
                                      "What causes Gout ?"]):
            session.add(QAPair(question=question, answer=f"answer {i}", source="s",
                               content_hash=f"h{i}"))
    snapshot = find_snapshot(find_snapshot_name(build_snapshot(name="dedup", test_fraction=0)))
    assert snapshot.counts["total"] == 2
    assert snapshot.counts["repeated_questions_dropped"] == 1


def test_a_repeated_question_keeps_its_first_pair_that_fits_the_answer_window(home):
    """MedQuAD asks "What is (are) X ?" of several sections; when the first section's answer
    is too long for the window, a later one that fits is the pair kept, not none."""
    import json

    from registry.db import session_scope
    from registry.models import QAPair

    answers = [" ".join(["long"] * 40), "gout is a painful swelling of a joint", "too short",
               "gout comes from uric acid crystals in a joint"]
    with session_scope() as session:
        for i, answer in enumerate(answers):
            session.add(QAPair(question="What is (are) Gout ?", answer=answer, source="s",
                               content_hash=f"h{i}"))
    snapshot = find_snapshot(find_snapshot_name(build_snapshot(
        name="window", test_fraction=0, min_answer_words=5, max_answer_words=20)))
    rows = [json.loads(line) for line in open(f"{snapshot.path}/train.jsonl")]
    assert [r["messages"][-1]["content"] for r in rows] == [answers[1]]
    assert snapshot.counts["repeated_questions_dropped"] == 1
