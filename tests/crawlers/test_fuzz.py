"""Hypothesis fuzzing of the cleaner and the extractor."""

from __future__ import annotations

import os
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crawlers.demo_site.medquad import QA, Document
from crawlers.demo_site.render import LAYOUTS, _document_page
from crawlers.extract import extract_page
from crawlers.text import CleanSteps, clean_text, collapse_whitespace, join_blocks

# FUZZ_EXAMPLES=2000 for a longer hunt than CI's.
FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "60")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
# Printable text of every script, punctuation and symbol (emoji included), and spaces.
PRINTABLE = st.characters(categories=["L", "M", "N", "P", "S", "Zs"])
WORDS = st.text(PRINTABLE, min_size=1, max_size=40).map(collapse_whitespace).filter(bool)
# Prose without the characters the optional steps act on, to check what cleaning keeps.
PLAIN = st.text(st.characters(categories=["L", "N", "Zs"], include_characters=".,;!?()%'-"),
                max_size=200)
STEPS = st.builds(CleanSteps, st.booleans(), st.booleans(), st.booleans(), st.booleans(),
                  st.booleans(), st.booleans())
HTMLISH = st.lists(st.sampled_from(list("<>/=\"' &;#abdhilmnprstuv123\n") + [
    "<p>", "</p>", "<h2>", "</h2>", "<h1>", "<dl>", "<dt>", "<dd>", "<main>", "<li>", "<ul>",
    "<script type='application/ld+json'>", "</script>", '{"@type":"FAQPage"', "&amp;", "&#0;",
    "\x00", "<!--", "]]>", "<?xml ?>"]), max_size=120).map("".join)


@FUZZ
@given(text=st.text(max_size=300), steps=STEPS)
def test_cleaner_never_fails_and_leaves_tidy_whitespace(text: str, steps: CleanSteps) -> None:
    cleaned = clean_text(text, steps)
    if steps.whitespace:
        assert cleaned == cleaned.strip()
        assert "\n\n\n" not in cleaned and "  " not in cleaned


@FUZZ
@given(text=PLAIN)
def test_default_cleaning_keeps_words_digits_punctuation_and_case(text: str) -> None:
    assert clean_text(text).split() == text.split()


@FUZZ
@given(text=st.text(max_size=200))
def test_every_step_on_removes_urls_emoji_and_hashtags(text: str) -> None:
    everything = CleanSteps(urls=True, emoticons=True, hashtags=True)
    cleaned = clean_text(text + " see https://x.org/a 😀 #topic", everything)
    assert "https://" not in cleaned and "😀" not in cleaned
    assert not re.search(r"(?<![\w#])#[A-Za-z_]", cleaned)


@FUZZ
@given(body=HTMLISH | st.binary(max_size=300))
def test_extractor_returns_a_page_or_raises_value_error(body: str | bytes) -> None:
    try:
        page = extract_page(body, "http://site.test/page")
    except ValueError:
        return
    for section in page.sections:
        assert section.question and section.answer


@st.composite
def documents(draw) -> Document:
    pairs = draw(st.lists(st.tuples(
        WORDS, st.lists(WORDS | st.lists(WORDS, min_size=1, max_size=3), min_size=1, max_size=3)),
        min_size=1, max_size=4, unique_by=lambda p: p[0]))
    return Document(collection="cdc", doc_id="1", focus=draw(WORDS), original_url="",
                    qa_pairs=tuple(QA(q, tuple(blocks), "information") for q, blocks in pairs))


@FUZZ
@given(doc=documents(), layout=st.sampled_from(LAYOUTS))
def test_every_layout_round_trips_its_pairs(doc: Document, layout: str) -> None:
    page = extract_page(_document_page(doc, "http://site.test", [], layout))
    assert page.focus_area == doc.focus
    assert [(s.question, s.answer) for s in page.sections] == [
        (qa.question, join_blocks(list(qa.answer_blocks))) for qa in doc.qa_pairs]
