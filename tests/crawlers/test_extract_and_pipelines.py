"""Extraction and pipelines on hand-written pages and items (no network, no crawl)."""

from __future__ import annotations

import pytest
from scrapy.exceptions import DropItem

from crawlers.demo_site.medquad import split_answer
from crawlers.extract import extract_page
from crawlers.items import QAPageItem, QAPairItem
from crawlers.pipelines import CleanPipeline, DeduplicatePipeline, canonical_url

PAGE = """<html lang="en"><head><title>T</title>
<link rel="canonical" href="/flu.html"></head><body>
<div class="cookie-banner"><p>We use cookies.</p></div>
<header><h1>Site name</h1></header><nav><h2>Menu?</h2><p>Home</p></nav>
<main><article><h1>Flu</h1><nav class="toc"><p>On this page</p></nav>
<h2 data-qtype="information">What is the flu?</h2><p>An  <b>infection</b> of the
nose, throat (and lungs).</p><ul><li>Fever &gt; 38&nbsp;C</li><li>Cough</li></ul>
<h3>Who gets it?</h3><p>Anyone, 5% to 20% of people each year.</p>
<footer><p>Reviewed 2024</p></footer></article>
<aside><h2>Related links</h2><p>Colds</p></aside></main>
<footer><p>Copyright</p></footer></body></html>"""


def test_extract_takes_sections_from_the_content_region_only() -> None:
    page = extract_page(PAGE, "http://example.org/x")
    assert page.focus_area == "Flu" and page.language == "en" and page.canonical_url == "/flu.html"
    assert [(s.question, s.qtype) for s in page.sections] == [
        ("What is the flu?", "information"), ("Who gets it?", None)]
    assert page.sections[0].answer == (
        "An infection of the nose, throat (and lungs).\n\n- Fever > 38 C\n- Cough")
    for chrome in ("cookies", "Menu", "On this page", "Related", "Copyright", "Reviewed"):
        assert chrome not in page.text


def test_index_page_without_questions_has_no_sections() -> None:
    page = extract_page("<html><body><main><h1>Topics</h1><ul><li><a href='/a'>A</a></li></ul>"
                        "</main></body></html>")
    assert page.sections == []


def test_medquad_bullet_runs_become_lists() -> None:
    assert split_answer("Risks include - Smoking  - Obesity  - Age. Older people.\n\n"
                        "Treatments -- there are two:\n  - Drugs\n  - Surgery") == [
        "Risks include", ["Smoking", "Obesity", "Age. Older people."],
        "Treatments -- there are two:", ["Drugs", "Surgery"]]


def _item(**changes) -> QAPageItem:
    item = QAPageItem(url="http://example.org/flu.html?utm_source=x#top", focus_area=" Flu ",
                      text="Flu\n\n\n\nWhat  is it?", qa_pairs=[
                          QAPairItem("What is <i>it</i>?", "A virus:  H1N1,\n 5%  of  cases."),
                          QAPairItem("Empty?", "  ")])
    for key, value in changes.items():
        setattr(item, key, value)
    return item


def test_clean_pipeline_normalizes_whitespace_and_keeps_punctuation_numbers_case() -> None:
    item = CleanPipeline().process_item(_item())
    assert item.focus_area == "Flu" and item.text == "Flu\n\nWhat is it?"
    assert [(q.question, q.answer) for q in item.qa_pairs] == [
        ("What is it?", "A virus: H1N1,\n5% of cases.")]


def test_clean_pipeline_drops_a_page_without_answers() -> None:
    with pytest.raises(DropItem, match="no question with an answer"):
        CleanPipeline().process_item(_item(qa_pairs=[QAPairItem("Q?", " ")]))


def test_deduplicate_pipeline_drops_same_page_under_another_url() -> None:
    dedup = DeduplicatePipeline()
    first = dedup.process_item(CleanPipeline().process_item(_item()))
    assert first.url == "http://example.org/flu.html"
    with pytest.raises(DropItem, match="duplicate url"):
        dedup.process_item(CleanPipeline().process_item(_item(url="http://EXAMPLE.org/flu.html")))
    with pytest.raises(DropItem, match="duplicate content"):
        dedup.process_item(CleanPipeline().process_item(_item(url="http://example.org/b.html")))


def test_canonical_url_removes_tracking_and_fragment_only() -> None:
    assert canonical_url("http://Example.org/a?b=2&utm_medium=x&a=1#f") == \
        "http://example.org/a?a=1&b=2"
