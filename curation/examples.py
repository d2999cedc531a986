"""What a snapshot is made of: examples from QA pairs, articles or an imported instruction file.

Every example keeps its origin (a stored QA pair or article, or a line of an imported file) so
the snapshot can record members, and the texts that leakage checks compare (prompt, answer).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from curation.errors import CurationError
from registry.snapshots import ArticleData, QAPairData

ExampleKind = Literal["qa", "chunks", "headings", "import"]
KINDS: tuple[str, ...] = ("qa", "chunks", "headings", "import")
SNAPSHOT_KINDS = {"qa": "qa-chat", "chunks": "article-text", "headings": "article-qa",
                  "import": "imported-chat"}


@dataclass(frozen=True)
class Example:
    """One training row: ``messages`` for chats, ``text`` for plain-text chunks."""

    key: str  # content hash of the row; what the snapshot hash is made of
    prompt: str
    answer: str
    messages: list[dict[str, str]] | None = None
    text: str | None = None
    qa_pair_id: int | None = None
    article_id: int | None = None
    columns: dict[str, Any] = field(default_factory=dict)  # stratify on any of these

    def row(self) -> dict[str, Any]:
        return {"messages": self.messages} if self.messages is not None else {"text": self.text}


def _key(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def to_messages(question: str, answer: str | None, system_prompt: str | None = None) -> list[dict]:
    """One single-turn chat; without ``answer`` it is the prompt to generate from."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages.append({"role": "user", "content": question.strip()})
    if answer is not None:
        messages.append({"role": "assistant", "content": answer.strip()})
    return messages


def from_qa_pairs(pairs: list[QAPairData], system_prompt: str | None) -> list[Example]:
    return [
        Example(key=p.content_hash, prompt=p.question, answer=p.answer,
                messages=to_messages(p.question, p.answer, system_prompt), qa_pair_id=p.id,
                columns={"topic": (p.topic or p.focus_area or "").lower() or None,
                         "focus_area": p.focus_area, "source": p.source, "language": p.language})
        for p in pairs
    ]


def _columns(article: ArticleData) -> dict[str, Any]:
    return {"topic": (article.topic or "").lower() or None, "focus_area": article.title,
            "source": article.source, "language": article.language}


def chunk_words(text: str, size: int, overlap: int = 0) -> list[str]:
    """Windows of ``size`` words, ``overlap`` shared between neighbours."""
    if size < 1 or not 0 <= overlap < size:
        raise CurationError(f"chunk size must be at least 1 and overlap in [0, size), got "
                           f"{size} and {overlap}")
    words = text.split()
    step = size - overlap
    return [" ".join(words[i:i + size]) for i in range(0, max(1, len(words) - overlap), step)
            if words[i:i + size]]


def from_article_chunks(articles: list[ArticleData], size: int) -> list[Example]:
    """Plain-text chunks for continued pretraining, the title leading each article's first."""
    examples = []
    for article in articles:
        for n, chunk in enumerate(chunk_words(f"{article.title}\n\n{article.text}", size)):
            examples.append(Example(key=_key(article.content_hash, str(size), str(n)), prompt="",
                                    answer=chunk, text=chunk, article_id=article.id,
                                    columns=_columns(article)))
    return examples


_SENTENCE_END = re.compile(r"[.!:;,]$")


def is_heading(block: str) -> bool:
    """A block that reads like a heading: one short line that doesn't end like a sentence."""
    line = block.strip()
    return ("\n" not in line and 0 < len(line.split()) <= 15 and not _SENTENCE_END.search(line))


def heading_sections(text: str) -> list[tuple[str, str]]:
    """(heading, the text under it up to the next heading) for each heading with text under it."""
    sections: list[tuple[str, list[str]]] = []
    for block in (b.strip() for b in text.split("\n\n")):
        if not block:
            continue
        if is_heading(block):
            sections.append((block, []))
        elif sections:
            sections[-1][1].append(block)
    return [(h, "\n\n".join(body)) for h, body in sections if body]


def from_article_headings(articles: list[ArticleData], system_prompt: str | None,
                          ) -> list[Example]:
    """QA-style chats from headings ("What is (are) Glaucoma ?") and the text under them."""
    examples = []
    for article in articles:
        for heading, body in heading_sections(article.text):
            question = heading if heading.endswith("?") else f"{article.title}: {heading}"
            examples.append(Example(key=_key(article.content_hash, question, body),
                                    prompt=question, answer=body,
                                    messages=to_messages(question, body, system_prompt),
                                    article_id=article.id, columns=_columns(article)))
    return examples


def _imported_messages(record: dict[str, Any], where: str) -> list[dict[str, str]]:
    """alpaca (instruction/input/output), sharegpt (conversations from/value) or messages."""
    if "messages" in record:
        return [{"role": m["role"], "content": m["content"]} for m in record["messages"]]
    if "conversations" in record:
        roles = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                 "system": "system", "bot": "assistant"}
        try:
            return [{"role": roles[t["from"]], "content": t["value"]}
                    for t in record["conversations"]]
        except KeyError as exc:
            raise CurationError(f"{where}: unknown sharegpt speaker {exc}; expected one of "
                               f"{', '.join(roles)}") from exc
    if "instruction" in record and "output" in record:
        prompt = record["instruction"]
        if record.get("input"):
            prompt = f"{prompt}\n\n{record['input']}"
        return to_messages(prompt, record["output"], record.get("system"))
    raise CurationError(f"{where}: not alpaca, sharegpt or messages; a record needs "
                       "'messages', 'conversations' or 'instruction' + 'output'")


def read_instruction_file(path: Path) -> list[Example]:
    """An alpaca/sharegpt/messages file (.json list or .jsonl), used as is."""
    if not path.is_file():
        raise CurationError(f"no instruction file at {path}")
    raw = path.read_text(encoding="utf-8")
    try:
        records = json.loads(raw) if path.suffix == ".json" else [
            json.loads(line) for line in raw.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise CurationError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    examples = []
    for n, record in enumerate(records, 1):
        messages = _imported_messages(record, f"{path.name} record {n}")
        users = [m["content"] for m in messages if m["role"] == "user"]
        replies = [m["content"] for m in messages if m["role"] == "assistant"]
        if not replies:
            raise CurationError(f"{path.name} record {n}: no assistant reply to train on")
        examples.append(Example(key=_key(json.dumps(messages, sort_keys=True)),
                                prompt="\n".join(users), answer="\n".join(replies),
                                messages=messages, columns={"source": path.name}))
    return examples
