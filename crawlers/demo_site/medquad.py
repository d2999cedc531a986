"""Read the bundled MedQuAD XML documents and split each answer into paragraphs and lists."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from lxml import etree

DATA_DIR = Path(__file__).resolve().parent / "data" / "medquad"
COLLECTIONS = {"7_SeniorHealth_QA": "seniorhealth", "9_CDC_QA": "cdc",
               "5_NIDDK_QA": "niddk"}

Block = str | list[str]  # a paragraph, or a list's items

# SeniorHealth answers were flattened: "include - Smoking  - Obesity  - Race." A run with a
# double-spaced " - " is a bullet list; a lone " - " is a dash inside a sentence.
_INLINE_BULLETS = re.compile(r"\S\s{2,}-\s+\S")
_INLINE_SPLIT = re.compile(r"\s+-\s+(?=\S)")
_LINE_BULLET = re.compile(r"^\s*-\s+")


@dataclass(frozen=True)
class QA:
    question: str
    answer_blocks: tuple[Block, ...]
    qtype: str


@dataclass(frozen=True)
class Document:
    collection: str  # short slug, e.g. "cdc"
    doc_id: str
    focus: str
    original_url: str
    qa_pairs: tuple[QA, ...] = field(default_factory=tuple)

    @property
    def slug(self) -> str:
        words = re.sub(r"[^a-z0-9]+", "-", self.focus.lower()).strip("-")
        return f"{self.doc_id}-{words[:60].rstrip('-')}"

    @property
    def path(self) -> str:
        return f"/{self.collection}/{self.slug}.html"


def split_answer(answer: str) -> list[Block]:
    """Each line is a paragraph; "- item" lines and inline bullet runs become lists."""
    blocks: list[Block] = []
    for line in answer.splitlines():
        if not line.strip():
            continue
        if _LINE_BULLET.match(line):
            item = _LINE_BULLET.sub("", line).strip()
            if blocks and isinstance(blocks[-1], list):
                blocks[-1].append(item)
            else:
                blocks.append([item])
        elif _INLINE_BULLETS.search(line):
            lead, *items = _INLINE_SPLIT.split(line.strip())
            if lead.strip():
                blocks.append(lead.strip())
            blocks.append([i.strip() for i in items if i.strip()])
        else:
            blocks.append(line.strip())
    return [b for b in blocks if b]


def _read(path: Path, collection: str) -> Document:
    root = etree.parse(str(path)).getroot()
    pairs = []
    for qa in root.iter("QAPair"):
        question = qa.find("Question")
        pairs.append(
            QA(
                question=" ".join((question.text or "").split()),
                answer_blocks=tuple(split_answer(qa.findtext("Answer") or "")),
                qtype=question.get("qtype", ""),
            )
        )
    return Document(
        collection=collection,
        doc_id=root.get("id", path.stem),
        focus=" ".join((root.findtext("Focus") or path.stem).split()),
        original_url=root.get("url", ""),
        qa_pairs=tuple(p for p in pairs if p.question and p.answer_blocks),
    )


@lru_cache(maxsize=1)
def load_documents() -> tuple[Document, ...]:
    """Every bundled document, in a stable order (collection, then id)."""
    docs = []
    for folder, collection in COLLECTIONS.items():
        for path in sorted((DATA_DIR / folder).glob("*.xml")):
            docs.append(_read(path, collection))
    return tuple(docs)
