"""Fixtures for the trainer tests: a store holding real MedQuAD QA pairs."""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from registry import db
from registry.db import session_scope
from registry.models import QAPair
from tests.conftest import MEDQUAD_DIR, reset_caches

# SeniorHealth answers are short (20-100 words), so a few hundred LoRA steps can learn them.
MEDQUAD_SUBSET = "7_SeniorHealth_QA"
MAX_ANSWER_WORDS = 120
# Enough for the loss to fall and the output to change, in a few seconds each on 2 CPU cores.
TEST_BASE_STEPS = 150
TEST_LORA_STEPS = 60


@dataclass(frozen=True)
class MedQuADPair:
    question: str
    answer: str
    url: str
    focus: str
    qtype: str


def read_medquad(subset: str = MEDQUAD_SUBSET, limit: int = 40) -> list[MedQuADPair]:
    """The first ``limit`` QA pairs with a short answer and a question not seen before.

    MedQuAD repeats a question within a document ("What is (are) X ?" for several sections);
    identical prompts with different answers cannot be learned, so only the first is kept.
    """
    pairs: list[MedQuADPair] = []
    seen: set[str] = set()
    for xml_file in sorted((MEDQUAD_DIR / subset).glob("*.xml")):
        doc = ET.parse(xml_file).getroot()
        focus = (doc.findtext("Focus") or "").strip()
        for qa in doc.iter("QAPair"):
            question = " ".join((qa.findtext("Question") or "").split())
            answer = " ".join((qa.findtext("Answer") or "").split())
            if not question or not answer or len(answer.split()) > MAX_ANSWER_WORDS:
                continue
            if question.lower() in seen:
                continue
            seen.add(question.lower())
            qtype = qa.find("Question").get("qtype", "")
            pairs.append(MedQuADPair(question, answer, doc.get("url", str(xml_file)), focus, qtype))
            if len(pairs) >= limit:
                return pairs
    return pairs


def insert_qa_pairs(pairs: list[MedQuADPair], topic: str = "health") -> None:
    with session_scope() as session:
        for p in pairs:
            digest = hashlib.sha256(f"{p.question}\n{p.answer}".encode()).hexdigest()
            session.add(QAPair(question=p.question, answer=p.answer, source=p.url,
                               focus_area=p.focus, qtype=p.qtype, topic=topic,
                               content_hash=digest))


@pytest.fixture
def qa_store(home: Path) -> Iterator[list[MedQuADPair]]:
    """A fresh store holding 40 real MedQuAD QA pairs."""
    pairs = read_medquad(limit=40)
    assert len(pairs) == 40, f"bundled MedQuAD data missing under {MEDQUAD_DIR}"
    insert_qa_pairs(pairs)
    yield pairs


@contextmanager
def _store_at(home: Path) -> Iterator[Path]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LORAFORGE_HOME", str(home))
        mp.delenv("LORAFORGE_DATABASE_URL", raising=False)
        reset_caches()
        db.upgrade()
        try:
            yield home
        finally:
            db.get_engine().dispose()
            reset_caches()


@dataclass(frozen=True)
class TrainedStore:
    home: Path
    base_id: int
    snapshot_id: int
    adapter_id: int


@pytest.fixture(scope="session")
def trained_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrainedStore]:
    """One store per test session with 40 QA pairs, a tiny base, a snapshot and a LoRA adapter.

    Building these takes most of the folder's runtime, so the tests share them and
    only read from them (or count rows before and after).
    """
    from curation.build import build_snapshot
    from trainers.base_model import build_tiny_base
    from trainers.run import run_training

    with _store_at(tmp_path_factory.mktemp("trained") / "home") as home:
        insert_qa_pairs(read_medquad(limit=40))
        base_id = build_tiny_base(steps=TEST_BASE_STEPS)
        snapshot_id = build_snapshot(seed=0)
        adapter_id = run_training(overrides={"max_steps": TEST_LORA_STEPS, "max_length": 256,
                                             "logging_steps": 2, "eval_steps": 30,
                                             "generate_examples": 2, "max_new_tokens": 32,
                                             "progress_bar": False})
        yield TrainedStore(home, base_id, snapshot_id, adapter_id)
