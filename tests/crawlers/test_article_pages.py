"""The ``articles`` spider on real news pages (Zyte's benchmark, in benchmarks/article_pages/),
served over loopback and crawled into a real store: it keeps every article and its stored text
scores at least as well as bare trafilatura on the same HTML."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from crawlers.article_extract import extract_article
from crawlers.text import strip_markup

REPO_ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location(
    "article_extraction", REPO_ROOT / "benchmarks" / "article_extraction.py")
bench = importlib.util.module_from_spec(_spec)
sys.modules["article_extraction"] = bench  # dataclasses look their module up
_spec.loader.exec_module(bench)

# Pages the spider once dropped as index pages (0.57-0.70 of their words are link text), two with
# Korean title brackets the markup cleaner cut, and one where trafilatura's precision setting
# keeps 39 of 533 words; then the first pages by id, whatever they are.
REGRESSIONS = ["2c46804d9d", "7a664e40d2", "c467d50755", "5caf91b8a4", "ef2b3f268a",
               "f6ac15a4d9", "5211188428", "8cad00dc22", "f8ff621a0b"]


def _pages() -> list:
    every = bench.load_pages()
    chosen = [p for p in every if p.id.startswith(tuple(REGRESSIONS))]
    assert len(chosen) == len(REGRESSIONS)
    return chosen + [p for p in every if p not in chosen][:16]


def test_spider_keeps_every_real_article_and_matches_trafilatura(home: Path) -> None:
    pages = _pages()
    result = bench.compare(pages, f"sqlite:///{home / 'pages.db'}")
    assert result["dropped"] == {}
    ours, theirs = (result["systems"][k] for k in ("articles spider", "bare trafilatura"))
    assert ours["empty"] == 0
    assert ours["tokens"]["f1"] >= theirs["tokens"]["f1"]
    assert ours["shingles"]["f1"] >= theirs["shingles"]["f1"]
    per_page = result["per_page"]
    fragment = next(k for k in per_page if k.startswith("f8ff621a0b"))
    # Precision alone scores 0.05 here (39 of 533 words); the recheck recovers the article.
    assert per_page[fragment]["spider_f1"] == per_page[fragment]["trafilatura_f1"] > 0.8
    for key in (k for k in per_page if k.startswith(("5211188428", "8cad00dc22"))):
        assert per_page[key]["spider_f1"] >= per_page[key]["trafilatura_f1"] - 0.01


def test_a_list_of_headlines_is_an_index_page_however_long() -> None:
    items = "".join(f'<li><a href="/n/{i}.html">Story {i}: the council votes on the new '
                    f'budget for schools and roads</a></li>' for i in range(40))
    page = f"<html><body><main><h1>Latest news</h1><ul>{items}</ul></main></body></html>"
    assert extract_article(page) == "index page (mostly links)"


def test_a_long_article_among_many_links_is_kept() -> None:
    links = "".join(f'<li><a href="/s/{i}">Section number {i} of the site</a></li>'
                    for i in range(120))
    body = "".join(f"<p>Paragraph {i}: the hospital reported that the new screening programme "
                   f"found glaucoma early in many patients who had no symptoms at all.</p>"
                   for i in range(6))
    page = (f"<html><body><nav><ul>{links}</ul></nav><article><h1>Screening works</h1>{body}"
            f"</article></body></html>")
    found = extract_article(page)
    assert not isinstance(found, str), found
    assert found.text.count("Paragraph") == 6


def test_markup_cleaner_removes_html_tags_only() -> None:
    assert strip_markup("Watch <The Palace: Tale of Jang Noksu> now") == \
        "Watch <The Palace: Tale of Jang Noksu> now"
    assert strip_markup("a <b>bold</b> word<br/>and <div class='x'>more</div>") == \
        "a bold word and  more "
    assert strip_markup("if a < b and c > d") == "if a < b and c > d"
