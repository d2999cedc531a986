"""Text normalization shared by the extractor, the clean pipeline and the demo site's ground truth.

Answers keep a light structure so that training data reads well: paragraphs are separated
by a blank line and list items are lines starting with "- ".
"""

from __future__ import annotations

import html
import re

_SPACES = re.compile(r"[ \t\f\v\r\u00a0\u2000-\u200b\u202f\u205f\u3000]+")
_BLANK_LINES = re.compile(r"\n{3,}")
# A tag left behind in text (e.g. "<b>" escaped twice by the site); "a < b" is not a tag.
# Inline tags vanish ("<i>it</i>?" is "it?"); any other tag separates words.
_INLINE_TAG = re.compile(
    r"</?(?:a|abbr|b|cite|code|em|i|mark|q|s|small|span|strong|sub|sup|u)(?:\s[^<>]*)?/?>", re.I)
_LEFTOVER_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9-]*(?:\s[^<>]*)?/?>")


def collapse_whitespace(text: str) -> str:
    """One line: every run of whitespace (newlines included) becomes one space."""
    return " ".join(text.split())


def normalize_text(text: str) -> str:
    """Collapse spaces within lines, drop empty lines beyond one paragraph break, strip ends."""
    lines = [_SPACES.sub(" ", line).strip() for line in text.replace("\r\n", "\n").split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def strip_markup(text: str) -> str:
    """Remove HTML tags and entities that survived extraction; punctuation and case are kept."""
    return html.unescape(_LEFTOVER_TAG.sub(" ", _INLINE_TAG.sub("", text)))


def clean_text(text: str) -> str:
    return normalize_text(strip_markup(text))


def join_blocks(blocks: list[str | list[str]]) -> str:
    """Paragraphs (str) and lists (list of items) as text: blank line between blocks."""
    parts = []
    for block in blocks:
        if isinstance(block, list):
            items = [collapse_whitespace(item) for item in block]
            parts.append("\n".join(f"- {item}" for item in items if item))
        else:
            parts.append(collapse_whitespace(block))
    return "\n\n".join(p for p in parts if p)
