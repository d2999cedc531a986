r"""Article extraction: the ``articles`` spider's stored text vs. bare trafilatura, on real pages.

    python benchmarks/article_extraction.py [--pages DIR] [--limit N] [--out scores.json]

DIR holds ``html/<id>.html.gz`` (gzip, UTF-8) and ``ground-truth.json`` mapping each id to
``{"url": ..., "articleBody": ...}``: the layout of Zyte's article-extraction benchmark, whose
181 hand-annotated news and blog pages from 126 sites ship in ``benchmarks/article_pages/``
(MIT, see its README). Any folder in that layout can be scored.

Every page is served on 127.0.0.1 at ``/pages/<id>.html`` and crawled from a sitemap by the real
``articles`` spider, with every pipeline and its default settings, into a fresh SQLite store;
the stored text is scored. In the same run, bare ``trafilatura.extract(html,
include_comments=False)`` (how that benchmark runs trafilatura) is scored on the same HTML.

Per page: precision and recall of the multiset of ``\w+`` tokens against the reference, and the
same over 4-token shingles (the benchmark's own measure). Averages follow that benchmark: mean
precision, mean recall, F1 of the two means. A page the spider did not store scores 0 and is
listed with the reason the spider gives for it.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import socket
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

REPO_ROOT = Path(__file__).resolve().parent.parent
PAGES = REPO_ROOT / "benchmarks" / "article_pages"
THROUGHPUT = {"AUTOTHROTTLE_ENABLED": "0", "CONCURRENT_REQUESTS": "16",
              "CONCURRENT_REQUESTS_PER_DOMAIN": "16"}
_TOKEN = re.compile(r"\w+")


@dataclass(frozen=True)
class ReferencePage:
    id: str
    url: str
    html: bytes
    reference: str


@dataclass(frozen=True)
class Scores:
    precision: float
    recall: float

    @property
    def f1(self) -> float:
        total = self.precision + self.recall
        return 2 * self.precision * self.recall / total if total else 0.0


def load_pages(folder: Path = PAGES, limit: int | None = None,
               ids: list[str] | None = None) -> list[ReferencePage]:
    """The pages of a benchmark folder, sorted by id; ``ids`` picks some, ``limit`` the first N."""
    truth_file = folder / "ground-truth.json"
    if not truth_file.is_file():
        raise SystemExit(f"error: {truth_file} not found: a page folder holds ground-truth.json "
                         f"and html/<id>.html.gz")
    truth = json.loads(truth_file.read_text(encoding="utf-8"))
    chosen = sorted(ids if ids is not None else truth)[:limit]
    pages = []
    for key in chosen:
        path = folder / "html" / f"{key}.html.gz"
        if not path.is_file():
            raise SystemExit(f"error: {path} not found for page {key} of {truth_file}")
        pages.append(ReferencePage(key, truth[key].get("url", ""), gzip.decompress(
            path.read_bytes()), truth[key].get("articleBody") or ""))
    return pages


def _units(text: str, n: int) -> Counter:
    tokens = _TOKEN.findall(text or "")
    if n == 1:
        return Counter(tokens)
    return Counter(tuple(tokens[i:i + n]) for i in range(max(1, len(tokens) - n + 1))
                   if tokens[i:i + n])


def page_scores(reference: str, prediction: str | None, n: int = 1) -> Scores:
    """Precision and recall of ``prediction``'s n-grams of ``\\w+`` tokens against the reference."""
    true, pred = _units(reference, n), _units(prediction or "", n)
    tp = sum((true & pred).values())
    fp, fn = sum(pred.values()) - tp, sum(true.values()) - tp
    if fp == fn == 0:
        return Scores(1.0, 1.0)
    return Scores(tp / (tp + fp) if tp + fp else 0.0, tp / (tp + fn) if tp + fn else 0.0)


def mean_scores(scores: list[Scores]) -> Scores:
    return Scores(sum(s.precision for s in scores) / len(scores),
                  sum(s.recall for s in scores) / len(scores))


def _served_path(page: ReferencePage) -> str:
    return f"/pages/{page.id}.html"


def _stored_url(page: ReferencePage, served: str) -> str:
    """The URL the spider stores the page under: its canonical link, normalized as it does."""
    from lxml import html as lxml_html

    from crawlers.pipelines import canonical_url

    try:
        canonical = lxml_html.fromstring(page.html).xpath("//link[@rel='canonical']/@href")
    except (ValueError, lxml_html.etree.ParserError):
        canonical = []
    return canonical_url(urljoin(served, canonical[0].strip() if canonical else served))


def crawl_pages(pages: list[ReferencePage], database_url: str) -> tuple[dict[str, str | None],
                                                                         dict[str, int]]:
    """Serve ``pages``, crawl them with the ``articles`` spider into ``database_url``; return the
    stored text per page id (None when not stored) and the crawl run's drop reasons."""
    from sqlalchemy import select

    from crawlers.demo_site import Page, serve
    from crawlers.demo_site.render import _sitemap
    from crawlers.run import run_crawl
    from registry import db
    from registry.article_store import get_crawl_run
    from registry.models import Article

    db.upgrade(database_url)
    # The sitemap holds absolute URLs, so the port is chosen before the site is built.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base_url = f"http://127.0.0.1:{port}"
    site = {_served_path(p): Page("text/html; charset=utf-8", p.html) for p in pages}
    site["/pages-sitemap.xml"] = Page(
        "application/xml", _sitemap([base_url + _served_path(p) for p in pages]))
    with serve(port=port, per_collection=0, extra_pages=site):
        run_id = run_crawl("articles", {"sitemap_urls": f"{base_url}/pages-sitemap.xml"},
                           database_url=database_url, settings=THROUGHPUT)
        expected = {p.id: _stored_url(p, base_url + _served_path(p)) for p in pages}
    with db.session_scope(database_url) as session:
        stored = {a.url: a.text for a in session.scalars(select(Article))}
    run = get_crawl_run(run_id, url=database_url)
    db.get_engine(database_url).dispose()
    return {key: stored.get(url) for key, url in expected.items()}, dict(run.drop_reasons or {})


def drop_reason(page: ReferencePage) -> str:
    """Why the spider's extraction refuses a page, or what else could have dropped it."""
    from crawlers.article_extract import extract_article

    found = extract_article(page.html.decode("utf-8", "replace"), page.url)
    return found if isinstance(found, str) else "extracted, then dropped by a pipeline"


def trafilatura_texts(pages: list[ReferencePage]) -> dict[str, str | None]:
    import trafilatura

    return {p.id: trafilatura.extract(p.html.decode("utf-8", "replace"), include_comments=False)
            for p in pages}


def compare(pages: list[ReferencePage], database_url: str) -> dict:
    """The spider and bare trafilatura scored on ``pages``, as a JSON-ready dict."""
    ours, reasons = crawl_pages(pages, database_url)
    theirs = trafilatura_texts(pages)
    result: dict = {"pages": len(pages), "drop_reasons": reasons, "systems": {}, "per_page": {}}
    for name, texts in (("articles spider", ours), ("bare trafilatura", theirs)):
        row = {}
        for unit, n in (("tokens", 1), ("shingles", 4)):
            mean = mean_scores([page_scores(p.reference, texts[p.id], n) for p in pages])
            row[unit] = {"precision": mean.precision, "recall": mean.recall, "f1": mean.f1}
        row["empty"] = sum(1 for p in pages if not texts[p.id])
        result["systems"][name] = row
    result["dropped"] = {p.id: drop_reason(p) for p in pages if ours[p.id] is None}
    result["per_page"] = {p.id: {"url": p.url,
                                 "spider_f1": page_scores(p.reference, ours[p.id]).f1,
                                 "trafilatura_f1": page_scores(p.reference, theirs[p.id]).f1}
                          for p in pages}
    return result


def print_report(result: dict) -> None:
    print(f"\n{result['pages']} real article pages, served on 127.0.0.1")
    print(f"{'':18} {'token P':>8} {'R':>6} {'F1':>6}   {'shingle P':>9} {'R':>6} {'F1':>6}  "
          f"{'no text':>7}")
    for name, row in result["systems"].items():
        t, s = row["tokens"], row["shingles"]
        print(f"{name:18} {t['precision']:8.3f} {t['recall']:6.3f} {t['f1']:6.3f}   "
              f"{s['precision']:9.3f} {s['recall']:6.3f} {s['f1']:6.3f}  {row['empty']:7d}")
    ours, theirs = (result["systems"][k] for k in ("articles spider", "bare trafilatura"))
    print(f"spider ÷ trafilatura F1: {ours['tokens']['f1'] / theirs['tokens']['f1']:.3f} "
          f"(tokens), {ours['shingles']['f1'] / theirs['shingles']['f1']:.3f} (shingles)")
    print(f"pages dropped by the spider: {len(result['dropped'])}")
    for key, reason in sorted(result["dropped"].items()):
        print(f"  {key[:16]}  {reason}  ({result['per_page'][key]['url']})")
    if result["drop_reasons"]:
        print(f"the crawl run's drop reasons: {result['drop_reasons']}")
    worse = sorted(result["per_page"].items(),
                   key=lambda kv: kv[1]["spider_f1"] - kv[1]["trafilatura_f1"])[:5]
    print("pages where the spider trails trafilatura most (token F1, spider vs trafilatura):")
    for key, row in worse:
        print(f"  {key[:16]}  {row['spider_f1']:.3f} vs {row['trafilatura_f1']:.3f}  "
              f"{row['url']}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog="Zyte's 181 pages take about a minute on 2 cores.")
    parser.add_argument("--pages", type=Path, default=PAGES,
                        help="folder with ground-truth.json and html/<id>.html.gz "
                             "(default: the bundled benchmarks/article_pages)")
    parser.add_argument("--limit", type=int, help="score only the first N pages by id")
    parser.add_argument("--out", type=Path, help="write every score, per page too, as JSON")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO_ROOT))
    pages = load_pages(args.pages, args.limit)
    home = Path(tempfile.mkdtemp(prefix="loraforge-extraction-"))
    os.environ["LORAFORGE_HOME"] = str(home)
    result = compare(pages, f"sqlite:///{home / 'extraction.db'}")
    print_report(result)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
        print(f"scores written to {args.out}")


if __name__ == "__main__":
    main()
