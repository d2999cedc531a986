"""Bad input across every command group: one clear line, a non-zero exit, the store unchanged.

Each case runs the console script's own entry point in-process against one shared store that
holds QA pairs, a snapshot, a base and adapter folders damaged in every way we know of. Before
and after each case every table's row count is compared, and the files under LORAFORGE_HOME
are listed, so a refused command that leaves a row or a half-written folder behind fails here.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import func, select

from registry import db
from registry.db import session_scope
from registry.models import Adapter, Base, BaseModel
from tests.conftest import MEDQUAD_DIR, reset_caches
from tests.trainers.conftest import insert_qa_pairs, read_medquad
from tests.trainers.test_train_cli import run_cli

MEDQUAD_XML = next((MEDQUAD_DIR / "7_SeniorHealth_QA").glob("*.xml"))


@dataclass(frozen=True)
class BadStore:
    home: Path
    files: Path  # the bad input files the cases point at


def _write(folder: Path, name: str, data: bytes | str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)
    return path


def _safetensors(tensors: dict[str, list[float]]) -> bytes:
    """A small valid safetensors file written by hand (fp32, 1-D)."""
    import struct

    header, offset, body = {}, 0, b""
    for key, values in tensors.items():
        data = struct.pack(f"<{len(values)}f", *values)
        header[key] = {"dtype": "F32", "shape": [len(values)],
                       "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        body += data
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw + body


PEFT_CONFIG = json.dumps({"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 2,
                          "lora_alpha": 4, "target_modules": ["q_proj"]})
GOOD_WEIGHTS = _safetensors({"base_model.model.lora_A.weight": [0.0] * 64})
ADAPTER_FOLDERS: dict[str, dict[str, bytes | str]] = {
    "noconfig": {"adapter_model.safetensors": GOOD_WEIGHTS},
    "badjson": {"adapter_config.json": '{"peft_type": "LORA", ', "adapter_model.safetensors":
                GOOD_WEIGHTS},
    "notpeft": {"adapter_config.json": '{"r": 8}', "adapter_model.safetensors": GOOD_WEIGHTS},
    "listjson": {"adapter_config.json": "[1, 2]", "adapter_model.safetensors": GOOD_WEIGHTS},
    "binaryjson": {"adapter_config.json": b"\xff\xfe\x00garbage",
                   "adapter_model.safetensors": GOOD_WEIGHTS},
    "truncated": {"adapter_config.json": PEFT_CONFIG,
                  "adapter_model.safetensors": GOOD_WEIGHTS[: len(GOOD_WEIGHTS) - 100]},
    "garbageweights": {"adapter_config.json": PEFT_CONFIG,
                       "adapter_model.safetensors": b"\x10\x00\x00\x00\x00\x00\x00\x00{not json"},
    "emptyweights": {"adapter_config.json": PEFT_CONFIG, "adapter_model.safetensors": b""},
    "notensors": {"adapter_config.json": PEFT_CONFIG, "adapter_model.safetensors":
                  _safetensors({})},
    "pickled": {"adapter_config.json": PEFT_CONFIG, "adapter_model.bin": b"\x80\x04pickle"},
    "noweights": {"adapter_config.json": PEFT_CONFIG},
}


@pytest.fixture(scope="module")
def bad_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BadStore]:
    from curation.build import build_snapshot
    from trainers.base_model import register_base

    root = tmp_path_factory.mktemp("bad")
    home, files = root / "home", root / "files"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("LORAFORGE_HOME", str(home))
        env.delenv("LORAFORGE_DATABASE_URL", raising=False)
        env.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing answers: no Hub traffic
        env.delenv("HF_TOKEN", raising=False)
        reset_caches()
        db.upgrade()
        insert_qa_pairs(read_medquad(limit=16))
        build_snapshot(name="snap", test_fraction=0.25, seed=0)
        model_dir = root / "model"
        _write(model_dir, "config.json", json.dumps({"model_type": "llama"}))
        register_base("fake", str(model_dir))
        with session_scope() as session:
            base = session.scalars(select(BaseModel).filter_by(name="fake")).one()
            for name, contents in [*ADAPTER_FOLDERS.items(), ("gone", {})]:
                folder = home / "adapters" / f"{name}-v1"
                for filename, data in contents.items():
                    _write(folder, filename, data)
                session.add(Adapter(name=name, version=1, path=str(folder), method="lora",
                                    base_model_id=base.id))
        _bad_files(files)
        try:
            yield BadStore(home, files)
        finally:
            db.get_engine().dispose()
            reset_caches()


def _bad_files(files: Path) -> None:
    good_xml = MEDQUAD_XML.read_text(encoding="utf-8")
    for name, data in {
        "empty.csv": "",
        "header-only.csv": "question,answer,source,focus_area\n",
        "missing-columns.csv": "question,source\nWhat is it?,x\n",
        "ragged.csv": "question,answer,source,focus_area\nWhat is it?,An answer.,s,f,extra\n",
        "latin1.csv": "question,answer\nQu\xe9 es?,Una respuesta\n".encode("latin-1"),
        "nul.csv": b"question,answer\nWhat\x00 is it?,An answer\n",
        "truncated.xml": good_xml[: len(good_xml) // 2],
        "notxml.xml": "this is not XML at all",
        "wrongroot.xml": "<Document><Other/></Document>",
        "noanswer.xml": "<Document><Focus>X</Focus><QAPairs><QAPair><Question>Q?</Question>"
                        "</QAPair></QAPairs></Document>",
        "medquad-empty/README.txt": "no xml here",
        "bad.jsonl": '{"instruction": "hi", "output": "there"}\n{not json}\n',
        "array.jsonl": "[1, 2, 3]\n",
        "shape.jsonl": '{"prompt": "hi", "completion": "there"}\n',
        "turns.jsonl": '{"messages": ["hello", "there"]}\n',
        "emptyturn.jsonl": '{"messages": [{"role": "user", "content": ""}]}\n',
        "data.txt": "question? answer.",
        "recipe-bad.yaml": "method: lora\nconfig: [unclosed\n",
        "recipe-list.yaml": "- just\n- a list\n",
        "recipe-field.yaml": "method: lora\nconfig:\n  no_such_field: 1\n",
        "recipe-method.yaml": "method: no-such-method\n",
        "recipe-type.yaml": "method: lora\nconfig:\n  rank: lots\n",
        "recipe-binary.yaml": b"\xff\xfe\x00\x01",
        "not-a-gguf.gguf": b"GGUF but not really",
        "afile": "a file where a folder is expected",
    }.items():
        _write(files, name, data)
    (files / "dir.csv").mkdir()


def _counts() -> dict[str, int]:
    with session_scope() as session:
        return {name: session.scalar(select(func.count()).select_from(table)) or 0
                for name, table in Base.metadata.tables.items()}


def _tree(home: Path) -> set[str]:
    return {str(p.relative_to(home)) for p in home.rglob("*")
            if not p.name.startswith("loraforge.db")}


F = "{files}"  # replaced by the bad-files folder
H = "{home}"   # replaced by LORAFORGE_HOME

CASES: list[tuple[str, list[str], str]] = [
    # crawl: URLs refused before any crawl run is recorded
    ("crawl-qa-no-url", ["crawl", "qa"], "give --sitemap URL or --start-url URL"),
    ("crawl-qa-not-a-url", ["crawl", "qa", "--sitemap", "not-a-url"], "is not an http(s) URL"),
    ("crawl-qa-ftp", ["crawl", "qa", "--start-url", "ftp://example.invalid/"],
     "is not an http(s) URL"),
    ("crawl-qa-no-host", ["crawl", "qa", "--sitemap", "http:///sitemap.xml"], "has no host"),
    ("crawl-qa-file-scheme", ["crawl", "qa", "--sitemap", "file:///etc/passwd"],
     "is not an http(s) URL"),
    ("crawl-articles-no-url", ["crawl", "articles"], "give --start-url URL or --sitemap URL"),
    ("crawl-articles-ftp", ["crawl", "articles", "--start-url", "ftp://example.invalid/"],
     "is not an http(s) URL"),
    ("crawl-articles-mixed", ["crawl", "articles", "--start-url", "https://example.org/",
                              "--start-url", "mailto:a@b.c"], "is not an http(s) URL"),
    ("crawl-articles-sitemap-relative", ["crawl", "articles", "--sitemap", "/sitemap.xml"],
     "is not an http(s) URL"),
    ("crawl-max-pages-zero", ["crawl", "qa", "--sitemap", "http://127.0.0.1:9/s.xml",
                              "--max-pages", "0"], "Invalid value for '--max-pages'"),
    ("crawl-bad-setting", ["crawl", "qa", "--sitemap", "http://127.0.0.1:9/s.xml",
                           "--setting", "NOEQUALS"], "--setting takes NAME=VALUE"),
    ("crawl-max-depth-negative", ["crawl", "articles", "--start-url", "https://example.org/",
                                  "--max-depth", "-1"], "Invalid value for '--max-depth'"),
    ("crawl-unknown-option", ["crawl", "qa", "--sitemapp", "x"], "No such option: --sitemapp"),
    ("crawl-unknown-command", ["crawl", "nope"], "No such command 'nope'"),
    # crawl import: every file kind we read
    ("import-missing", ["crawl", "import", f"{F}/no-such.csv"], "does not exist"),
    ("import-empty-csv", ["crawl", "import", f"{F}/empty.csv"], "empty.csv"),
    ("import-header-only", ["crawl", "import", f"{F}/header-only.csv"], "holds no QA rows"),
    ("import-missing-columns", ["crawl", "import", f"{F}/missing-columns.csv"],
     "header lacks column(s) answer"),
    ("import-ragged", ["crawl", "import", f"{F}/ragged.csv"], "different number of fields"),
    ("import-latin1", ["crawl", "import", f"{F}/latin1.csv"], "not UTF-8"),
    ("import-nul", ["crawl", "import", f"{F}/nul.csv"], "nul.csv"),
    ("import-truncated-xml", ["crawl", "import", f"{F}/truncated.xml"], "not well-formed XML"),
    ("import-not-xml", ["crawl", "import", f"{F}/notxml.xml"], "not well-formed XML"),
    ("import-wrong-root", ["crawl", "import", f"{F}/wrongroot.xml"],
     "has neither <Focus> nor <QAPair>"),
    ("import-no-answer", ["crawl", "import", f"{F}/noanswer.xml"],
     "<QAPair> needs a <Question> and an <Answer>"),
    ("import-xml-folder-empty", ["crawl", "import", f"{F}/medquad-empty", "--format", "medquad"],
     "no .xml files found"),
    ("import-bad-jsonl", ["crawl", "import", f"{F}/bad.jsonl"], "not valid JSON"),
    ("import-array-jsonl", ["crawl", "import", f"{F}/array.jsonl"],
     "each line must be a JSON object"),
    ("import-shape-jsonl", ["crawl", "import", f"{F}/shape.jsonl"], "unknown JSONL shape"),
    ("import-turns-jsonl", ["crawl", "import", f"{F}/turns.jsonl"],
     "each turn must be an object"),
    ("import-empty-turn", ["crawl", "import", f"{F}/emptyturn.jsonl"], "holds no QA rows"),
    ("import-unknown-ext", ["crawl", "import", f"{F}/data.txt"], "cannot tell the format"),
    ("import-unknown-format", ["crawl", "import", f"{F}/empty.csv", "--format", "parquet"],
     "unknown format 'parquet'"),
    ("import-dir-as-csv", ["crawl", "import", f"{F}/dir.csv", "--format", "csv"], "is a folder"),
    ("import-bad-setting", ["crawl", "import", str(MEDQUAD_XML), "--setting", "X"],
     "--setting takes NAME=VALUE"),
    # data
    ("data-test-fraction", ["data", "build", "--test-fraction", "1.5"],
     "test fraction must be in [0, 1)"),
    ("data-test-fraction-text", ["data", "build", "--test-fraction", "lots"],
     "Invalid value for '--test-fraction'"),
    ("data-clusters-negative", ["data", "build", "--clusters", "-2"],
     "clusters must be 0 (no clustering) or more"),
    ("data-limit-and-clusters", ["data", "build", "--clusters", "2", "--limit", "4"],
     "use --limit or --clusters, not both"),
    ("data-min-over-max", ["data", "build", "--min-answer-words", "50",
                           "--max-answer-words", "10"], "is above max answer words"),
    ("data-stratify", ["data", "build", "--stratify", "colour"], "cannot stratify by 'colour'"),
    ("data-since", ["data", "build", "--since", "yesterday"], "--since"),
    ("data-taken-name", ["data", "build", "--name", "snap"], "snap"),
    ("data-nothing-selected", ["data", "build", "--topic", "no-such-topic"], "no-such-topic"),
    ("data-show-unknown", ["data", "show", "nope"], "nope"),
    ("data-export-unknown", ["data", "export", f"{F}/out", "--name", "nope"], "nope"),
    ("data-export-not-empty", ["data", "export", f"{F}/medquad-empty", "--name", "snap"],
     "medquad-empty"),
    ("data-export-onto-file", ["data", "export", f"{F}/afile", "--name", "snap"], "is a file"),
    ("data-near-dup", ["data", "build", "--near-duplicate-threshold", "0"],
     "near-duplicate threshold must be in (0, 1]"),
    # base
    ("base-add-missing-package", ["base", "add", "other", "--from-package", "no-such-pkg-xyz"],
     "package 'no-such-pkg-xyz' is not installed"),
    ("base-add-missing-gguf", ["base", "add", "other", "--from-gguf", f"{F}/none.gguf"],
     "no GGUF file at"),
    ("base-add-corrupt-gguf", ["base", "add", "other", "--from-gguf", f"{F}/not-a-gguf.gguf"],
     "not-a-gguf.gguf"),
    ("base-add-taken", ["base", "add", "fake", "--from-gguf", f"{F}/not-a-gguf.gguf"],
     "a base model called 'fake' exists"),
    ("base-add-missing-dir", ["base", "add", "other", f"{F}/no-such-model"], "no-such-model"),
    ("base-add-kind", ["base", "add", "other", f"{F}/afile", "--kind", "weird"], "weird"),
    ("base-init-steps", ["base", "init", "--steps", "0"], "steps"),
    # train
    ("train-unknown-method", ["train", "--method", "nope"], "unknown training method 'nope'"),
    ("train-unknown-base", ["train", "--base", "nope"], "nope"),
    ("train-unknown-dataset", ["train", "--base", "fake", "--dataset", "nope"], "nope"),
    ("train-rank-zero", ["train", "--base", "fake", "--rank", "0"], "rank must be at least 1"),
    ("train-set-no-equals", ["train", "--base", "fake", "--set", "rank"],
     "--set expects key=value"),
    ("train-set-unknown", ["train", "--base", "fake", "--set", "ranks=4"], "unknown option(s)"),
    ("train-lr-text", ["train", "--lr", "fast"], "Invalid value for '--lr'"),
    ("train-recipe-missing", ["train", "--recipe", f"{F}/none.yaml"], "cannot read recipe"),
    ("train-recipe-syntax", ["train", "--recipe", f"{F}/recipe-bad.yaml"], "recipe-bad.yaml"),
    ("train-recipe-list", ["train", "--recipe", f"{F}/recipe-list.yaml"], "recipe-list.yaml"),
    ("train-recipe-field", ["train", "--recipe", f"{F}/recipe-field.yaml", "--base", "fake"],
     "no_such_field"),
    ("train-recipe-method", ["train", "--recipe", f"{F}/recipe-method.yaml"],
     "unknown training method 'no-such-method'"),
    ("train-recipe-type", ["train", "--recipe", f"{F}/recipe-type.yaml", "--base", "fake"],
     "rank must be a whole number, got 'lots'"),
    ("train-recipe-binary", ["train", "--recipe", f"{F}/recipe-binary.yaml"],
     "is not UTF-8 text"),
    ("train-full-with-rank", ["train", "--method", "full", "--base", "fake", "--rank", "4"],
     "unknown option(s) rank"),
    ("train-resume-nothing", ["train", "--resume", "--name", "never-started"], "resume"),
    # eval: adapters whose files are damaged are refused before any model is loaded
    ("eval-nothing", ["eval"], "name at least one adapter"),
    ("eval-unknown-adapter", ["eval", "nope"], "nope"),
    ("eval-twice", ["eval", "truncated", "truncated"], "an adapter is named twice"),
    ("eval-no-config", ["eval", "noconfig", "--dataset", "snap"], "has no adapter_config.json"),
    ("eval-bad-json", ["eval", "badjson", "--dataset", "snap"], "is not valid JSON"),
    ("eval-binary-json", ["eval", "binaryjson", "--dataset", "snap"], "is not valid JSON"),
    ("eval-not-peft", ["eval", "notpeft", "--dataset", "snap"], "has no peft_type"),
    ("eval-list-json", ["eval", "listjson", "--dataset", "snap"], "has no peft_type"),
    ("eval-truncated", ["eval", "truncated", "--dataset", "snap"], "cut short"),
    ("eval-garbage-weights", ["eval", "garbageweights", "--dataset", "snap"],
     "not a readable safetensors file"),
    ("eval-empty-weights", ["eval", "emptyweights", "--dataset", "snap"],
     "not a readable safetensors file"),
    ("eval-no-tensors", ["eval", "notensors", "--dataset", "snap"], "holds no tensors"),
    ("eval-pickle", ["eval", "pickled", "--dataset", "snap"], "has only pickle weights"),
    ("eval-no-weights", ["eval", "noweights", "--dataset", "snap"],
     "has no adapter_model.safetensors"),
    ("eval-folder-gone", ["eval", "gone", "--dataset", "snap"], "is gone"),
    ("eval-unknown-dataset", ["eval", "--base", "fake", "--dataset", "nope"],
     "no dataset snapshot called 'nope'"),
    ("eval-unknown-split", ["eval", "--base", "fake", "--dataset", "snap", "--split", "nope"],
     "split must be test, validation or train, got 'nope'"),
    ("eval-unknown-base", ["eval", "--base", "nope"], "no base model called 'nope'"),
    ("eval-limit-zero", ["eval", "--base", "fake", "--limit", "0"], "limit must be at least 1"),
    # adapters
    ("adapters-show-unknown", ["adapters", "show", "nope"], "nope"),
    ("adapters-show-bad-version", ["adapters", "show", "truncated:v9"], "truncated:v9"),
    ("adapters-show-bad-json", ["adapters", "show", "badjson"], "is not valid JSON"),
    ("adapters-compare-one", ["adapters", "compare", "truncated"], "at least two"),
    ("adapters-tag-bad", ["adapters", "tag", "truncated", "--add", "two words"], "bad tag"),
    ("adapters-delete-unknown", ["adapters", "delete", "nope", "--yes"], "nope"),
    ("adapters-lineage-unknown", ["adapters", "lineage", "nope"], "nope"),
    ("adapters-merge-truncated", ["adapters", "merge", "truncated", "--out", f"{F}/merged"],
     "cut short"),
    ("adapters-merge-pickle", ["adapters", "merge", "pickled", "--out", f"{F}/merged"],
     "has only pickle weights"),
    ("adapters-merge-not-empty", ["adapters", "merge", "truncated", "--out",
                                  f"{F}/medquad-empty"], "is not empty"),
    # hub: refused before any request, and no token is ever needed to say so
    ("hub-push-bad-repo", ["hub", "push", "truncated", "--repo", "not a repo"],
     "invalid repo name"),
    ("hub-push-truncated", ["hub", "push", "truncated", "--repo", "alice/x"], "cut short"),
    ("hub-push-pickle", ["hub", "push", "pickled", "--repo", "alice/x"],
     "has only pickle weights"),
    ("hub-push-unknown", ["hub", "push", "nope", "--repo", "alice/x"], "nope"),
    ("hub-pull-bad-repo", ["hub", "pull", "../etc"], "invalid repo name"),
    # ui: refused before anything is bound
    ("ui-port-too-big", ["ui", "--port", "99999"], "Invalid value for '--port'"),
    ("ui-port-zero", ["ui", "--port", "0"], "Invalid value for '--port'"),
    ("ui-port-text", ["ui", "--port", "http"], "Invalid value for '--port'"),
    ("ui-unknown-base", ["ui", "--base", "nope"], "unknown base model 'nope'"),
    ("ui-4bit-on-cpu", ["ui", "--base", "fake", "--load-4bit"], "4-bit loading needs a CUDA GPU"),
    ("ui-max-adapters", ["ui", "--base", "fake", "--max-adapters", "0"],
     "max_adapters must be at least 1"),
    # demo: refused before the demo site is served or anything is crawled
    ("demo-port", ["demo", "--port", "70000"], "Invalid value for '--port'"),
    ("demo-train-steps", ["demo", "--train-steps", "0"], "Invalid value for '--train-steps'"),
    ("demo-limit", ["demo", "--limit", "-1"], "Invalid value for '--limit'"),
    ("demo-methods", ["demo", "--methods", "lora,nope", "--no-ui"], "nope"),
    ("demo-set", ["demo", "--set", "rank", "--no-ui"], "key=value"),
    ("demo-push", ["demo", "--push", "not a repo", "--no-ui"], "not a repo"),
    # db and the top level
    ("db-upgrade-unknown-revision", ["db", "upgrade", "nope"], "cannot upgrade to 'nope'"),
    ("top-unknown-command", ["serv"], "No such command 'serv'"),
    ("serve-broken-base", ["serve"], "cannot load the tokenizer of base"),
    ("top-unknown-option", ["--verbose"], "No such option: --verbose"),
]


@pytest.mark.parametrize(("args", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_a_nonzero_exit_and_nothing_stored(
        bad_store: BadStore, capsys: pytest.CaptureFixture[str], args: list[str], message: str):
    argv = [a.replace(F, str(bad_store.files)).replace(H, str(bad_store.home)) for a in args]
    before, files_before = _counts(), _tree(bad_store.home)
    code, out, err = run_cli(capsys, *argv)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code != 0, (out, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert message in lines[0], lines[0]
    assert "Traceback" not in out + err
    assert _counts() == before
    assert _tree(bad_store.home) == files_before


def test_the_table_covers_every_command_group_with_80_cases():
    groups = {c[1][0] for c in CASES}
    assert {"crawl", "data", "base", "train", "eval", "adapters", "hub", "ui", "demo",
            "db"} <= groups
    assert len({c[0] for c in CASES}) == len(CASES) >= 80


LIMIT = 128 * 1024  # bytes per file: above SQLite's 32 KiB shared-memory file, below the export


def _cli_with_limits(home: Path, args: list[str], file_limit: int) -> subprocess.CompletedProcess:
    """The console script in a child whose files may not grow past ``file_limit`` bytes: the
    kernel refuses the write (EFBIG) as a full disk would (ENOSPC), with nothing to mount."""
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))

    env = {**os.environ, "LORAFORGE_HOME": str(home), "COLUMNS": "200"}
    env.pop("LORAFORGE_DATABASE_URL", None)
    return subprocess.run([sys.executable, "-m", "loraforge", *args], env=env,
                          capture_output=True, text=True, timeout=300, check=False,
                          preexec_fn=limit)


def test_a_full_disk_while_exporting_is_one_line_and_leaves_no_partial_folder(
        bad_store: BadStore, tmp_path: Path):
    home = tmp_path / "home"
    shutil.copytree(bad_store.home, home)
    with sqlite3.connect(home / "loraforge.db") as store:  # the copy's snapshot is its own
        store.execute("UPDATE dataset_snapshots SET path = replace(path, ?, ?)",
                      (str(bad_store.home), str(home)))
    train = next(home.glob("datasets/*/train.jsonl"))
    line = train.read_text(encoding="utf-8").splitlines()[0] + "\n"
    with train.open("a", encoding="utf-8") as padded:  # past the limit; the store stays under
        padded.write(line * (4 * LIMIT // len(line)))
    out = tmp_path / "export"
    done = _cli_with_limits(home, ["data", "export", str(out), "--name", "snap"], LIMIT)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode != 0, done.stdout
    assert len(lines) == 1 and lines[0].startswith("error: File too large"), done.stderr
    assert not out.exists()
    assert not any(p.name.startswith(".export") for p in tmp_path.iterdir())


def test_a_store_on_a_full_disk_is_one_line(bad_store: BadStore, tmp_path: Path):
    home = tmp_path / "home"
    shutil.copytree(bad_store.home, home)
    for side_file in home.glob("loraforge.db-*"):  # SQLite must write these to open the store
        side_file.unlink()
    done = _cli_with_limits(home, ["adapters", "list"], 1024)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode != 0, done.stdout
    assert len(lines) == 1 and lines[0].startswith("error: the store at"), done.stderr


def test_a_home_that_is_a_file_is_one_line(bad_store: BadStore, tmp_path: Path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    env = {**os.environ, "LORAFORGE_HOME": str(blocker / "home")}
    env.pop("LORAFORGE_DATABASE_URL", None)
    done = subprocess.run([sys.executable, "-m", "loraforge", "db", "upgrade"], env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode != 0
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "Not a directory" in lines[0] and str(blocker) in lines[0]


