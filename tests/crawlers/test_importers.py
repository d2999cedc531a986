"""Importers: the study's CSV, MedQuAD XML and chat JSONL go through the crawl's pipelines."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from crawlers.demo_site.medquad import DATA_DIR
from crawlers.errors import CrawlError
from crawlers.importers import import_file
from registry import db
from registry.article_store import get_crawl_run, list_crawl_runs
from registry.models import Article, QAPair
from tests.conftest import REPO_ROOT

CSV = (
    "question,answer,source,focus_area,qtype\n"
    '"What is glaucoma?","Glaucoma is a group of diseases that damage the optic nerve.",'
    "NEI,Glaucoma,information\n"
    '"Who gets glaucoma?","Anyone, but people over 60 are at higher risk.",NEI,Glaucoma,\n'
    '"What is  <b>flu</b>?","A contagious  respiratory illness.",'
    "https://www.cdc.gov/flu/,Flu,information\n"
)


def _pairs(url: str | None = None) -> list[tuple[str, str, str, str | None, str | None]]:
    with db.session_scope(url) as session:
        return sorted(session.execute(select(
            QAPair.question, QAPair.answer, QAPair.source, QAPair.focus_area, QAPair.qtype)).all())


def _count(model) -> int:
    with db.session_scope() as session:
        return session.scalar(select(func.count()).select_from(model))


def test_csv_import_cleans_stores_and_reimport_stores_nothing_twice(store_url: str,
                                                                    tmp_path: Path) -> None:
    path = tmp_path / "study.csv"
    path.write_text(CSV)
    first = import_file(path, "csv", database_url=store_url)
    assert (first.rows, first.pages, first.stored, first.qa_added) == (3, 2, 2, 3)
    assert _pairs(store_url) == [
        ("What is flu?", "A contagious respiratory illness.", "https://www.cdc.gov/flu/", "Flu",
         "information"),
        ("What is glaucoma?", "Glaucoma is a group of diseases that damage the optic nerve.",
         "NEI", "Glaucoma", "information"),
        ("Who gets glaucoma?", "Anyone, but people over 60 are at higher risk.", "NEI",
         "Glaucoma", None),
    ]
    again = import_file(path, "csv", database_url=store_url)
    assert (again.stored, again.unchanged, again.qa_added) == (0, 2, 0)
    assert len(_pairs(store_url)) == 3
    run = get_crawl_run(again.run_id, url=store_url)
    assert (run.spider, run.status, run.args["format"]) == ("import", "finished", "csv")


def test_medquad_import_reads_every_document_of_a_folder(home: Path, tmp_path: Path) -> None:
    folder = tmp_path / "medquad" / "9_CDC_QA"
    folder.mkdir(parents=True)
    for source in sorted((DATA_DIR / "9_CDC_QA").glob("*.xml"))[:4]:
        shutil.copy(source, folder)
    result = import_file(tmp_path / "medquad")
    assert result.pages == 4 and result.stored == 4 and result.qa_added == result.rows > 4
    with db.session_scope() as session:
        urls = list(session.scalars(select(Article.url)))
    assert all(u.startswith("http") for u in urls)


def test_jsonl_import_reads_alpaca_sharegpt_and_openai_lines(home: Path, tmp_path: Path) -> None:
    lines = [
        {"instruction": "What causes gout?", "input": "", "output": "Uric acid crystals.",
         "focus_area": "Gout"},
        {"conversations": [{"from": "human", "value": "Is gout painful?"},
                           {"from": "gpt", "value": "Yes, attacks are very painful."}]},
        {"messages": [{"role": "system", "content": "You answer health questions."},
                      {"role": "user", "content": "How is gout treated?"},
                      {"role": "assistant", "content": "With anti-inflammatory drugs."},
                      {"role": "user", "content": "And prevented?"},
                      {"role": "assistant", "content": "By lowering uric acid."}]},
    ]
    path = tmp_path / "chat.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    result = import_file(path, topic="rheumatology")
    assert (result.rows, result.pages, result.qa_added) == (4, 3, 4)
    questions = [q for q, *_ in _pairs()]
    assert questions == ["And prevented?", "How is gout treated?", "Is gout painful?",
                         "What causes gout?"]
    with db.session_scope() as session:
        assert set(session.scalars(select(QAPair.topic))) == {"rheumatology"}


@pytest.mark.parametrize(("name", "content", "fmt", "message"), [
    ("bad.csv", "question,answer,source,focus_area\n\"Q?\",\"A.\",S,F\n\"Q2?\",\"A2\"\n", "csv",
     r"bad.csv:3: row has a different number of fields"),
    ("cols.csv", "question,answer\nQ?,A.\n", "csv", r"cols.csv:1: header lacks column\(s\) "
     r"source, focus_area"),
    ("bad.jsonl", '{"instruction": "Q?", "output": "A."}\n{"instruction": \n', "jsonl",
     r"bad.jsonl:2: not valid JSON"),
    ("shape.jsonl", '{"instruction": "Q?", "output": "A."}\n\n{"prompt": "x"}\n', "jsonl",
     r"shape.jsonl:3: unknown JSONL shape"),
    ("bad.xml", "<Document id='1'>\n<Focus>F</Focus>\n<QAPairs><QAPair>\n</QAPairs>\n</Document>",
     "medquad", r"bad.xml:4: not well-formed XML"),
    ("latin1.csv", None, "csv", r"latin1.csv:2: not UTF-8"),
])
def test_import_error_names_file_and_line_and_leaves_store_unchanged(
        home: Path, tmp_path: Path, name: str, content: str | None, fmt: str, message: str) -> None:
    path = tmp_path / name
    if content is None:
        path.write_bytes("question,answer,source,focus_area\nQ?,Caf\xe9.,S,F\n".encode("latin-1"))
    else:
        path.write_text(content)
    with pytest.raises(CrawlError, match=message):
        import_file(path, fmt)
    assert _count(QAPair) == 0 and list_crawl_runs() == []


def test_cli_import_reports_a_bad_row_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"messages": [{"role": "user", "content": 3}]}\n')
    env = {**os.environ, "LORAFORGE_HOME": str(tmp_path / "home"), "COLUMNS": "200"}
    env.pop("LORAFORGE_DATABASE_URL", None)
    result = subprocess.run([sys.executable, "-m", "loraforge", "crawl", "import", str(path),
                             "--format", "jsonl"], cwd=REPO_ROOT, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"{path}:1: turn of role 'user' has no text content" in lines[0]
