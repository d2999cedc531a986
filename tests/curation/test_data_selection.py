"""Selection by source, language, date and crawl run; articles as chunks or heading QA; imported
instruction files used as is; token statistics and truncation with a real tokenizer."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from curation.build import build_snapshot
from curation.errors import CurationError
from registry.db import session_scope
from registry.models import Article, CrawlRun, Source
from registry.snapshots import count_snapshots, find_snapshot, snapshot_members

GLAUCOMA = ("What is (are) Glaucoma ?\n\nGlaucoma is a group of diseases that can damage the "
            "eye's optic nerve.\n\nWho is at risk for Glaucoma? ?\n\nAnyone can develop "
            "glaucoma. Some people are at higher risk.\n\nMore help\n\nAsk your eye doctor.")


@pytest.fixture
def articles(home: Path) -> None:
    with session_scope() as session:
        run = CrawlRun(spider="qa")
        session.add_all([run, Source(name="eye.test"), Source(name="other.test")])
        session.flush()
        src = {s.name: s.id for s in session.query(Source)}
        session.add_all([
            Article(url="https://eye.test/glaucoma", title="Glaucoma", text=GLAUCOMA,
                    topic="eyes", language="en", content_hash="g", source_id=src["eye.test"],
                    crawl_run_id=run.id, published=datetime(2024, 5, 1, tzinfo=timezone.utc)),
            Article(url="https://other.test/gota", title="Gota", text="La gota duele. " * 300,
                    topic="joints", language="es", content_hash="o",
                    source_id=src["other.test"],
                    published=datetime(2020, 1, 1, tzinfo=timezone.utc)),
        ])


def _rows(snap, split: str = "train") -> list[dict]:
    path = Path(snap.path) / f"{split}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_headings_become_questions_with_the_text_under_them(articles):
    build_snapshot(name="h", kind="headings", source="eye.test", test_fraction=0)
    snap = find_snapshot("h")
    chats = [r["messages"] for r in _rows(snap)]
    assert [c[0]["content"] for c in chats] == [
        "What is (are) Glaucoma ?", "Who is at risk for Glaucoma? ?", "Glaucoma: More help"]
    assert chats[0][1]["content"].startswith("Glaucoma is a group of diseases")
    assert snap.kind == "article-qa"
    assert [m.article_id for m in snapshot_members(snap.id)] == [1]


@pytest.mark.parametrize(("where", "expected_topics"), [
    ({"language": "es"}, {"joints"}),
    ({"since": datetime(2023, 1, 1, tzinfo=timezone.utc)}, {"eyes"}),
    ({"until": datetime(2023, 1, 1, tzinfo=timezone.utc)}, {"joints"}),
    ({"crawl_run": 1}, {"eyes"}),
    ({}, {"eyes", "joints"}),
])
def test_chunks_are_selected_by_language_date_and_crawl_run(articles, where, expected_topics):
    snapshot_id = build_snapshot(kind="chunks", chunk_words=100, test_fraction=0, **where)
    snap = find_snapshot(None)
    assert snap.id == snapshot_id
    assert set(snap.counts["topics"]) == expected_topics
    assert all(set(r) == {"text"} and len(r["text"].split()) <= 100 for r in _rows(snap))


def test_empty_filter_names_the_options(articles):
    with pytest.raises(CurationError, match="no articles match --language 'fr'; widen"):
        build_snapshot(kind="chunks", language="fr")
    assert count_snapshots() == 0


def test_imported_alpaca_sharegpt_and_messages_are_used_as_is(home, tmp_path):
    records = [
        {"instruction": "Define gout.", "input": "", "output": "A form of arthritis."},
        {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]},
        {"messages": [{"role": "user", "content": "2+2?"},
                      {"role": "assistant", "content": "4"}]},
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    build_snapshot(name="imp", kind="import", import_file=str(path), test_fraction=0)
    chats = [r["messages"] for r in _rows(find_snapshot("imp"))]
    assert [c[-1]["content"] for c in chats] == ["A form of arthritis.", "Hello", "4"]
    assert chats[1][0] == {"role": "user", "content": "Hi"}


def test_tokenizer_gives_token_stats_truncation_count_and_packed_rows(qa_store, tmp_path):
    from trainers.base_model import train_tokenizer

    tok_dir = tmp_path / "tok"
    train_tokenizer([p.answer for p in qa_store], vocab_size=400).save_pretrained(tok_dir)
    build_snapshot(name="tok", tokenizer=str(tok_dir), template="llama3", max_length=64,
                   packing=True)
    snap = find_snapshot("tok")
    assert snap.token_stats["unit"] == "tokens" and snap.token_stats["max"] > 64
    assert 0 < snap.counts["truncated"] <= 40
    tokenized = Path(snap.path) / "tokenized" / "train.jsonl"
    rows = [json.loads(line) for line in tokenized.read_text().splitlines()]
    assert all(len(r["input_ids"]) <= 64 and sum(r["lengths"]) == len(r["input_ids"])
               for r in rows)
    assert (Path(snap.path) / "token_lengths.png").is_file()
