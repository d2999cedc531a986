"""Import QA data people already have (the study's CSV, MedQuAD XML, chat JSONL) into the store.

Rows go through the crawl's own pipelines (clean, validate, deduplicate) and the same
idempotent store, as one crawl run named ``import``: importing a file twice stores nothing twice.
The whole file is read and checked before anything is written, so a bad row leaves the store
as it was; the error names the file and line.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from lxml import etree
from scrapy.exceptions import DropItem
from scrapy.settings import Settings

from core.settings import get_settings
from crawlers.errors import CrawlError
from crawlers.items import QAPageItem, QAPairItem
from crawlers.pipelines import (
    CleanPipeline,
    DeduplicatePipeline,
    ValidatePipeline,
    item_to_record,
)
from crawlers.text import join_blocks
from registry.article_store import finish_crawl_run, open_crawl_run, store_articles
from registry.models import CrawlStatus

FORMATS = ("csv", "medquad", "jsonl")
CSV_COLUMNS = ("question", "answer", "source", "focus_area")
USER_ROLES = {"user", "human"}
ASSISTANT_ROLES = {"assistant", "gpt", "bot", "model"}


@dataclass(frozen=True)
class ImportResult:
    run_id: int
    rows: int
    pages: int
    stored: int
    updated: int
    unchanged: int
    qa_added: int
    drop_reasons: dict[str, int]


def _fail(path: Path, line: int | None, message: str) -> CrawlError:
    where = f"{path}:{line}" if line else str(path)
    return CrawlError(f"{where}: {message}")


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise _fail(path, line, "not UTF-8; re-save the file as UTF-8") from None


def _is_web_url(value: str) -> bool:
    return value.startswith(("http://", "https://"))


def _import_key(*parts: str) -> str:
    # Imported rows without a web address still need one URL-shaped key per page.
    return "import://" + "/".join(quote(p.strip() or "-", safe="") for p in parts)


def _page(url: str, focus: str, pairs: list[QAPairItem], topic: str,
          source: str | None) -> QAPageItem:
    text = "\n\n".join([focus] + [part for qa in pairs for part in (qa.question, qa.answer)])
    return QAPageItem(url=url, focus_area=focus, text=text, qa_pairs=pairs, topic=topic,
                      source=source)


def read_csv(path: Path, topic: str) -> list[QAPageItem]:
    """The study's CSV (question, answer, source, focus_area[, qtype]): one page per source."""
    reader = csv.DictReader(io.StringIO(_read_text(path), newline=""))
    missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise _fail(path, 1, f"header lacks column(s) {', '.join(missing)}; "
                             f"expected {','.join(CSV_COLUMNS)}")
    groups: dict[str, tuple[str, str, list[QAPairItem]]] = {}
    try:
        for row in reader:
            line = reader.line_num
            if None in row or None in row.values():
                raise _fail(path, line, f"row has a different number of fields than the header "
                                        f"({len(reader.fieldnames or [])})")
            source, focus = row["source"].strip(), row["focus_area"].strip()
            key = source if _is_web_url(source) else _import_key(path.name, source, focus)
            _, _, pairs = groups.setdefault(key, (focus or source or path.stem, source, []))
            pairs.append(QAPairItem(row["question"], row["answer"],
                                    (row.get("qtype") or "").strip() or None, focus or None))
    except csv.Error as exc:
        raise _fail(path, reader.line_num, f"malformed CSV: {exc}") from None
    return [_page(key, focus, pairs, topic, source or None)
            for key, (focus, source, pairs) in groups.items()]


def _medquad_file(path: Path, topic: str) -> QAPageItem:
    from crawlers.demo_site.medquad import split_answer

    try:
        root = etree.parse(str(path)).getroot()
    except etree.XMLSyntaxError as exc:
        raise _fail(path, exc.lineno, f"not well-formed XML: {exc.msg}") from None
    if root.find("Focus") is None and root.find(".//QAPair") is None:
        raise _fail(path, root.sourceline, f"<{root.tag}> has neither <Focus> nor <QAPair>: "
                                           "not a MedQuAD document")
    focus = " ".join((root.findtext("Focus") or path.stem).split())
    pairs = []
    for qa in root.iter("QAPair"):
        question = qa.find("Question")
        if question is None or qa.find("Answer") is None:
            raise _fail(path, qa.sourceline, "<QAPair> needs a <Question> and an <Answer>")
        # MedQuAD left some answers empty (licensing); Clean drops those pairs.
        answer = join_blocks(split_answer(qa.findtext("Answer") or ""))
        pairs.append(QAPairItem(question.text or "", answer, question.get("qtype") or None))
    url = root.get("url", "")
    key = url if _is_web_url(url) else _import_key("medquad", path.parent.name, path.stem)
    return _page(key, focus, pairs, topic, None)


def read_medquad(path: Path, topic: str) -> list[QAPageItem]:
    """MedQuAD's XML: a folder of collections (or one collection, or one file); a page per doc."""
    files = [path] if path.is_file() else sorted(path.rglob("*.xml"))
    if not files:
        raise _fail(path, None, "no .xml files found; give a MedQuAD folder or XML file")
    return [_medquad_file(f, topic) for f in files]


def _turns(record: dict, path: Path, line: int) -> list[tuple[str, str]]:
    """(question, answer) pairs of an alpaca, sharegpt or OpenAI-messages record."""
    if "instruction" in record and "output" in record:
        question = "\n\n".join(str(p) for p in (record["instruction"], record.get("input")) if p)
        return [(question, str(record["output"]))]
    turns = record.get("conversations", record.get("messages"))
    if not isinstance(turns, list):
        raise _fail(path, line, "unknown JSONL shape: expected alpaca (instruction, output), "
                                "sharegpt (conversations) or OpenAI (messages)")
    pairs, question = [], None
    for turn in turns:
        if not isinstance(turn, dict):
            raise _fail(path, line, "each turn must be an object with role/content or from/value")
        role = str(turn.get("role", turn.get("from", ""))).lower()
        text = turn.get("content", turn.get("value"))
        if not isinstance(text, str):
            raise _fail(path, line, f"turn of role {role!r} has no text content")
        if role in USER_ROLES:
            question = text
        elif role in ASSISTANT_ROLES and question is not None:
            pairs.append((question, text))
            question = None
    return pairs


def read_jsonl(path: Path, topic: str) -> list[QAPageItem]:
    """Alpaca, sharegpt or OpenAI-messages JSONL: one page per line (or per ``source`` field)."""
    groups: dict[str, tuple[str, list[QAPairItem]]] = {}
    for line, raw in enumerate(_read_text(path).splitlines(), 1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except ValueError as exc:
            raise _fail(path, line, f"not valid JSON: {exc}") from None
        if not isinstance(record, dict):
            raise _fail(path, line, "each line must be a JSON object")
        focus = str(record.get("focus_area") or "")
        source = str(record.get("source") or "")
        key = source if _is_web_url(source) else _import_key(path.name, str(line))
        qtype = record.get("qtype")
        pairs = [QAPairItem(q, a, str(qtype) if qtype else None, focus or None)
                 for q, a in _turns(record, path, line)]
        title, existing = groups.setdefault(key, (focus or path.stem, []))
        existing.extend(pairs)
    return [_page(key, title, pairs, topic, None) for key, (title, pairs) in groups.items()]


READERS: dict[str, Callable[[Path, str], list[QAPageItem]]] = {
    "csv": read_csv, "medquad": read_medquad, "jsonl": read_jsonl}


def guess_format(path: Path) -> str:
    if path.is_dir() or path.suffix.lower() == ".xml":
        return "medquad"
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        return "jsonl"
    if path.suffix.lower() == ".csv":
        return "csv"
    raise CrawlError(f"cannot tell the format of {path}; give --format {'|'.join(FORMATS)}")


def _settings(overrides: dict[str, str] | None) -> Settings:
    settings = Settings()
    settings.setmodule("crawlers.settings", priority="project")
    settings.update(overrides or {}, priority="cmdline")
    return settings


def _processed(items: list[QAPageItem], settings: Settings, store_url: str,
               drops: Counter[str]) -> Iterator[QAPageItem]:
    """The items that pass clean, validate and deduplicate, with drops tallied by reason."""

    class Tally:
        def inc_value(self, key: str, count: int = 1) -> None:
            drops[key.rsplit("/", 1)[-1]] += count

    stages = [CleanPipeline.from_settings(settings),
              ValidatePipeline.from_settings(settings, Tally()),
              DeduplicatePipeline.from_settings(settings, store_url)]
    stages[2].load_stored()
    for item in items:
        try:
            for stage in stages:
                item = stage.process_item(item)
        except DropItem as exc:
            drops[str(exc).split(":", 1)[0].strip()] += 1
            continue
        yield item


def import_file(path: Path | str, fmt: str | None = None, *, topic: str = "health",
                database_url: str | None = None, settings: dict[str, str] | None = None,
                on_progress: Callable[[int, int], None] | None = None) -> ImportResult:
    """Read ``path`` as ``fmt`` (guessed from the name when None) and store it as one crawl run."""
    path = Path(path)
    if not path.exists():
        raise CrawlError(f"{path} does not exist")
    fmt = fmt or guess_format(path)
    if fmt not in READERS:
        raise CrawlError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    if path.is_dir() and fmt != "medquad":
        raise CrawlError(f"{path} is a folder; give a {fmt} file (only medquad reads a folder)")
    items = READERS[fmt](path, topic)
    rows = sum(len(item.qa_pairs) for item in items)
    if not rows:  # before the run is opened: an empty file records nothing
        raise CrawlError(f"{path} holds no QA rows; nothing to import")
    crawl_settings = _settings(settings)
    store_url = (database_url or (settings or {}).get("ARTICLE_STORE_URL")
                 or get_settings().resolved_database_url)
    batch_size = max(1, crawl_settings.getint("ARTICLE_STORE_BATCH_SIZE", 10)) * 10
    run_id = open_crawl_run("import", {"path": str(path.resolve()), "format": fmt, "topic": topic},
                            url=store_url)
    drops: Counter[str] = Counter()
    totals: Counter[str] = Counter()
    batch, done = [], 0
    try:
        for item in _processed(items, crawl_settings, store_url, drops):
            batch.append(item_to_record(item))
            if len(batch) >= batch_size:
                totals.update(vars(store_articles(run_id, batch, url=store_url)))
                batch = []
            done += 1
            if on_progress is not None:
                on_progress(done, len(items))
        if batch:
            totals.update(vars(store_articles(run_id, batch, url=store_url)))
    except BaseException as exc:
        finish_crawl_run(run_id, status=CrawlStatus.failed, pages_seen=len(items),
                         items_dropped=sum(drops.values()), drop_reasons=dict(drops),
                         error=f"import failed: {exc}"[:500], url=store_url)
        raise
    finish_crawl_run(run_id, status=CrawlStatus.finished, pages_seen=len(items),
                     items_dropped=sum(drops.values()), drop_reasons=dict(drops), url=store_url)
    return ImportResult(run_id, rows, len(items), totals["stored"], totals["updated"],
                        totals["unchanged"], totals["qa_added"], dict(drops))
