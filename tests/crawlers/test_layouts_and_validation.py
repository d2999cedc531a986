"""QA layouts (JSON-LD, <dl>), switchable cleaning, validation and near duplicates; no network."""

from __future__ import annotations

import json

import pytest
from scrapy.exceptions import DropItem
from scrapy.settings import Settings

from core.settings import get_settings
from crawlers.extract import extract_page
from crawlers.items import QAPageItem, QAPairItem
from crawlers.pipelines import DeduplicatePipeline, ValidatePipeline
from crawlers.text import CleanSteps, clean_text
from registry.article_store import ArticleRecord, open_crawl_run, store_articles


def _page(body: str, head: str = "") -> str:
    return (f"<html lang='en'><head><title>T | Site</title>{head}</head><body>"
            f"<nav><h2>Menu?</h2><p>Home</p></nav><main><article>{body}</article></main>"
            f"<footer><p>Copyright</p></footer></body></html>")


def _ld(data: dict) -> str:
    return f'<script type="application/ld+json">{json.dumps(data)}</script>'


def test_faqpage_jsonld_wins_over_markup_and_keeps_answer_structure() -> None:
    data = {"@context": "https://schema.org", "@graph": [
        {"@type": "WebSite", "name": "Site"},
        {"@type": "FAQPage", "name": "Gout", "mainEntity": [
            {"@type": "Question", "name": "What is gout?", "acceptedAnswer": {
                "@type": "Answer", "text": "<p>A kind of arthritis.</p><ul><li>Pain</li>"
                                           "<li>Swelling</li></ul>"}},
            {"@type": "Question", "name": "No answer?"},
        ]}]}
    page = extract_page(_page("<h1>Gout</h1><details><summary>What is gout?</summary>"
                              "<p>A kind of arthritis.</p></details>", _ld(data)))
    assert page.focus_area == "Gout"
    assert [(s.question, s.answer) for s in page.sections] == [
        ("What is gout?", "A kind of arthritis.\n\n- Pain\n- Swelling")]
    assert "What is gout?" in page.text and "Menu" not in page.text


def test_qapage_jsonld_takes_the_accepted_or_else_a_suggested_answer() -> None:
    data = {"@type": "QAPage", "mainEntity": {
        "@type": "Question", "name": "Can gout be cured?", "text": "Long body of the question",
        "suggestedAnswer": [{"@type": "Answer", "text": "It can be controlled."}]}}
    page = extract_page(_page("<p>Forum</p>", _ld(data)))
    assert [(s.question, s.answer) for s in page.sections] == [
        ("Can gout be cured?", "It can be controlled.")]
    assert page.focus_area == "T | Site"  # no h1: the <title>


def test_broken_jsonld_falls_back_to_the_markup() -> None:
    page = extract_page(_page("<h1>Flu</h1><h2>What is flu?</h2><p>An illness.</p>",
                              '<script type="application/ld+json">{"@type": FAQ</script>'))
    assert [(s.question, s.answer) for s in page.sections] == [("What is flu?", "An illness.")]


def test_dl_pairs_under_a_heading_and_dl_inside_an_answer() -> None:
    page = extract_page(_page(
        "<h1>Flu</h1><h2>Questions</h2><dl><dt data-qtype='symptoms'>Signs?</dt>"
        "<dd><p>Fever.</p><ul><li>Cough</li></ul></dd><dd>Aches.</dd><dt>Cure?</dt><dd>Rest.</dd>"
        "</dl><h2>Glossary?</h2><p>Terms:</p><dl><dt>Flu</dt><dd>Influenza</dd></dl>"))
    assert [(s.question, s.qtype, s.answer) for s in page.sections] == [
        ("Signs?", "symptoms", "Fever.\n\n- Cough\n\nAches."),
        ("Cure?", None, "Rest."),
        ("Glossary?", None, "Terms:\n\n- Flu: Influenza"),
    ]


def test_cleaning_steps_switch_one_by_one_and_keep_punctuation_numbers_case() -> None:
    text = "Call <b>NIH</b> :-) at www.nih.gov/flu, 5% of US cases 😷 #FluSeason #1 in C#."
    assert clean_text(text) == (
        "Call NIH :-) at www.nih.gov/flu, 5% of US cases #FluSeason #1 in C#.")
    everything = CleanSteps(urls=True, emoticons=True, hashtags=True)
    assert clean_text(text, everything) == "Call NIH at , 5% of US cases #1 in C#."
    assert clean_text("a  <i>b</i>", CleanSteps(markup=False, whitespace=False)) == "a  <i>b</i>"
    settings = Settings({"CLEAN_URLS": "1", "CLEAN_EMOJI": "false"})
    assert CleanSteps.from_settings(settings) == CleanSteps(urls=True, emoji=False)


def _item(url: str = "http://site.test/a", text: str = "", answer: str = "An answer.",
          **kw) -> QAPageItem:
    return QAPageItem(url=url, focus_area="Topic", text=text or f"Topic\n\nQ?\n\n{answer}",
                      qa_pairs=[QAPairItem("Q?", answer)], **kw)


class Tally(dict):
    def inc_value(self, key: str, count: int = 1) -> None:
        self[key] = self.get(key, 0) + count


def test_validate_drops_short_answers_and_unwanted_languages_by_name() -> None:
    tally = Tally()
    validate = ValidatePipeline(min_answer_chars=5, min_text_chars=10, languages=("en",),
                                stats=tally)
    item = _item(answer="Long enough answer, written in plain English for the test.")
    item.qa_pairs.append(QAPairItem("Short?", "No."))
    assert validate.process_item(item).language == "en"
    assert [qa.question for qa in item.qa_pairs] == ["Q?"]
    assert tally == {"loraforge/dropped/answer too short": 1}
    with pytest.raises(DropItem, match="^answer too short"):
        validate.process_item(_item(answer="No."))
    with pytest.raises(DropItem, match="^text too short"):
        validate.process_item(_item(text="Tiny"))
    french = "La grippe est une infection virale qui touche le nez, la gorge et les poumons."
    with pytest.raises(DropItem, match="^language not wanted: .* is fr"):
        validate.process_item(_item(answer=french, language="en"))


ARTICLE = ("Glaucoma is a group of diseases that can damage the eye's optic nerve and result in "
           "vision loss and blindness. The most common form is open-angle glaucoma, and regular "
           "comprehensive dilated eye exams help find it early.")


def test_near_duplicate_of_a_stored_page_or_of_this_run_is_dropped(home) -> None:
    run = open_crawl_run("qa", {})
    store_articles(run, [ArticleRecord(url="http://site.test/stored", title="G", text=ARTICLE)])
    dedup = DeduplicatePipeline(near_threshold=0.8,
                                store_url=get_settings().resolved_database_url)
    dedup.load_stored()
    near = ARTICLE.replace("regular", "routine")
    with pytest.raises(DropItem, match="^near duplicate: .*nearly equals http://site.test/stored"):
        dedup.process_item(_item(url="http://mirror.test/copy", text=near))
    # The stored page itself, crawled again, is an update candidate, not a duplicate.
    assert dedup.process_item(_item(url="http://site.test/stored", text=near)).url
    other = ("Influenza is a contagious respiratory illness caused by viruses that infect the "
             "nose, throat and lungs; vaccination each year is the best way to prevent it.")
    assert dedup.process_item(_item(url="http://site.test/flu", text=other))
    with pytest.raises(DropItem, match="^near duplicate: .*http://site.test/flu"):
        dedup.process_item(_item(url="http://site.test/flu2", text=other + " Stay home."))
