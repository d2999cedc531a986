"""The store's content keys, in a module of their own: page workers compute them ahead of the
store (``crawlers.page_work``) and must not import SQLAlchemy to do so."""

from __future__ import annotations

import hashlib


def _sha256(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


def _norm(text: str) -> str:
    return " ".join(text.split())


def qa_content_hash(question: str, answer: str) -> str:
    """The key of a QA pair: sha256 of the whitespace-normalized question and answer."""
    return _sha256(_norm(question), _norm(answer))


def article_content_hash(title: str, text: str) -> str:
    return _sha256(_norm(title), _norm(text))
