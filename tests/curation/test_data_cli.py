"""``loraforge data`` as a user runs it: bad input is one line and no row; show and export work."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from datasets import load_dataset

from registry.snapshots import count_snapshots
from tests.test_cli import REPO_ROOT


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capsys, monkeypatch):
    """``loraforge data ARGS`` through the console script's entry point, in this process (a
    subprocess per call costs ~10 s of imports on a shared CPU; one test below still spawns)."""
    from loraforge.cli import run

    def invoke(*args: str) -> Result:
        monkeypatch.setattr(sys, "argv", ["loraforge", "data", *args])
        capsys.readouterr()
        try:
            run()
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        out = capsys.readouterr()
        return Result(code, out.out, out.err)

    return invoke


@pytest.mark.parametrize(("args", "message"), [
    (["--topic", "health", "--max-answer-words", "1"],
     "no QA pairs match --topic 'health' and --max-answer-words 1"),
    (["--topic", "astronomy"], "unknown topic 'astronomy'"),
    (["--template", "vicuna"], "unknown chat template 'vicuna'"),
])
def test_bad_build_is_one_line_nonzero_and_no_snapshot(qa_store, cli, args, message):
    result = cli("build", *args)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert count_snapshots() == 0


def test_unknown_template_from_a_real_process_is_one_line_and_no_snapshot(qa_store):
    result = subprocess.run([sys.executable, "-m", "loraforge", "data", "build", "--template",
                             "vicuna"], cwd=REPO_ROOT, env=dict(os.environ),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: unknown chat template 'vicuna'; choose one of auto, tokenizer, llama2, llama3, "
        "chatml, alpaca"]
    assert count_snapshots() == 0


def test_build_show_and_export_give_files_datasets_can_load(qa_store, cli, tmp_path: Path):
    built = cli("build", "--name", "cli", "--validation-fraction", "0.1", "--seed", "1")
    assert built.returncode == 0, built.stderr
    shown = cli("show", "cli")
    assert shown.returncode == 0 and "per topic" in shown.stdout and "health" in shown.stdout
    out = tmp_path / "export"
    exported = cli("export", str(out), "--name", "cli")
    assert exported.returncode == 0, exported.stderr
    files = {s: str(out / f"{s}.jsonl") for s in ("train", "validation", "test")}
    data = load_dataset("json", data_files=files)
    assert (len(data["train"]), len(data["validation"]), len(data["test"])) == (32, 4, 4)
    assert (out / "token_lengths.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "snapshot.json").is_file()
    assert "cli" in cli("list").stdout
