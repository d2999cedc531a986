"""Text normalization shared by the extractor, the clean pipeline and the demo site's ground truth.

Answers keep a light structure so that training data reads well: paragraphs are separated
by a blank line and list items are lines starting with "- ". Every cleaning step can be
switched (``CleanSteps``); none of them touches punctuation, digits or case.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, fields

_OTHER_SPACES = r"\t\f\v\r\u00a0\u2000-\u200b\u202f\u205f\u3000"
# Runs of spaces within a line, less the single plain spaces that are already what a run becomes:
# substituting every space between two words made this the crawl's costliest cleaning step.
_SPACES = re.compile(rf"[ {_OTHER_SPACES}]{{2,}}|[{_OTHER_SPACES}]")
_BLANK_LINES = re.compile(r"\n{3,}")
# A tag left behind in text (e.g. "<b>" escaped twice by the site); "a < b" is not a tag, and
# neither is "<The Palace: Tale of Jang Noksu>", the title brackets of Korean and Chinese text:
# only HTML's own element names count. Inline tags vanish ("<i>it</i>?" is "it?"); any other
# tag separates words.
_INLINE_TAG = re.compile(
    r"</?(?:a|abbr|b|cite|code|em|i|mark|q|s|small|span|strong|sub|sup|u)(?:\s[^<>]*)?/?>", re.I)
_BLOCK_TAGS = (
    "address|article|aside|audio|blockquote|body|br|button|caption|center|col|colgroup|dd|del|"
    "details|dialog|div|dl|dt|embed|fieldset|figcaption|figure|font|footer|form|h[1-6]|head|"
    "header|hr|html|iframe|img|input|ins|label|legend|li|link|main|meta|nav|noscript|object|ol|"
    "option|p|picture|pre|script|section|select|source|style|summary|svg|table|tbody|td|"
    "template|textarea|tfoot|th|thead|title|tr|ul|video|wbr")
_LEFTOVER_TAG = re.compile(rf"</?(?:{_BLOCK_TAGS})(?:\s[^<>]*)?/?>", re.I)
# "http://x.org/a", "www.x.org/a": the scheme or "www." marks a URL; a trailing full stop or
# closing bracket belongs to the sentence, not the URL.
_URL = re.compile(r"(?:\b[a-z][a-z0-9+.-]*://|\bwww\.)[^\s<>\"']*[^\s<>\"'.,;:!?)\]]", re.I)
# Emoji blocks, less the numbers that share them (dingbat digits U+2776-2793, U+1F100-1F10C).
_EMOJI = re.compile(
    "[\U0001f000-\U0001f0ff\U0001f10d-\U0001faff\u2600-\u2775\u2794-\u27bf\u2b50\u2b55"
    "\u231a\u231b\u23e9-\u23f3\u23f8-\u23fa\ufe0f\u200d\U000e0020-\U000e007f]+")
# Western emoticons stand alone between spaces: ":-)", ";)", ":D", ":'(", "<3". Requiring the
# spaces keeps "Note:" and "(a)" and "8)" intact.
_EMOTICON = re.compile(r"(?<!\S)(?:[:;=][-'^o]?[)(\]\[DPpO/\\|*3]+|<3|\^_\^|-_-)(?=\s|$)")
# "#health" is a hashtag; "#1" and "C#" are not.
_HASHTAG = re.compile(r"(?<![\w#])#[A-Za-z_][\w-]*")


@dataclass(frozen=True)
class CleanSteps:
    """Which cleaning steps run. Defaults keep URLs and hashtags, which answers cite as content."""

    markup: bool = True
    whitespace: bool = True
    emoji: bool = True
    emoticons: bool = False
    urls: bool = False
    hashtags: bool = False

    @classmethod
    def from_settings(cls, settings) -> CleanSteps:
        """Read ``CLEAN_MARKUP``, ``CLEAN_URLS``, ... from Scrapy settings."""
        return cls(**{f.name: settings.getbool(f"CLEAN_{f.name.upper()}", f.default)
                      for f in fields(cls)})


DEFAULT_STEPS = CleanSteps()


def collapse_whitespace(text: str) -> str:
    """One line: every run of whitespace (newlines included) becomes one space."""
    return " ".join(text.split())


def normalize_text(text: str) -> str:
    """Collapse spaces within lines, drop empty lines beyond one paragraph break, strip ends."""
    # _SPACES never matches a newline, so one pass over the whole text equals one per line.
    lines = _SPACES.sub(" ", text.replace("\r\n", "\n")).split("\n")
    return _BLANK_LINES.sub("\n\n", "\n".join(line.strip() for line in lines)).strip()


def strip_markup(text: str) -> str:
    """Remove HTML tags and entities that survived extraction; punctuation and case are kept."""
    if "<" in text:
        text = _LEFTOVER_TAG.sub(" ", _INLINE_TAG.sub("", text))
    return html.unescape(text) if "&" in text else text


def remove_urls(text: str) -> str:
    return _URL.sub("", text)


def remove_emoji(text: str) -> str:
    return text if text.isascii() else _EMOJI.sub("", text)  # isascii() is a flag read


def remove_emoticons(text: str) -> str:
    return _EMOTICON.sub("", text)


def remove_hashtags(text: str) -> str:
    return _HASHTAG.sub("", text)


def clean_text(text: str, steps: CleanSteps = DEFAULT_STEPS) -> str:
    """The study's cleaning, step by step as ``steps`` says; paragraph breaks survive."""
    if steps.markup:
        text = strip_markup(text)
    if steps.urls:
        text = remove_urls(text)
    if steps.emoji:
        text = remove_emoji(text)
    if steps.emoticons:
        text = remove_emoticons(text)
    if steps.hashtags:
        text = remove_hashtags(text)
    return normalize_text(text) if steps.whitespace else text


def clean_line(text: str, steps: CleanSteps = DEFAULT_STEPS) -> str:
    """``clean_text`` for one-line fields (titles, questions)."""
    text = clean_text(text, steps)
    return collapse_whitespace(text) if steps.whitespace else text


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
