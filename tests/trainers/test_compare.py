"""``loraforge train compare``: a Markdown report with the study's columns and PNG bar charts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainers.compare import Cell, bar_chart, markdown_report, plan_grid

PNG = b"\x89PNG\r\n\x1a\n"


def _cell(method: str, rank: int | None, memory_mib: float, seconds: float) -> Cell:
    return Cell(method, rank, adapter=f"{method}:v1", metrics={
        "trainable_params": 1000, "trainable_percent": 1.0, "peak_memory_bytes": memory_mib * 2**20,
        "wall_seconds": seconds, "samples_per_second": 2.0, "tokens_per_second": 300.0,
        "total_flos": 1.5e12, "final_loss": 1.2, "eval_loss": 1.4, "perplexity": 4.05,
        "rouge_l": 0.21, "exact_match": 0.0, "peak_memory_kind": "process_rss"})


def test_grid_runs_full_once_and_every_adapter_method_at_every_rank():
    cells = plan_grid(["lora", "full", "qlora"], [4, 8])
    assert [c.label for c in cells] == ["lora r4", "lora r8", "full", "qlora r4", "qlora r8"]


def test_report_has_the_study_columns_and_failed_cells_say_why(tmp_path):
    cells = [_cell("lora", 4, 700, 12.5), _cell("full", None, 900, 20.0),
             Cell("qlora", 4, error="4-bit quantization cannot run on cpu here")]
    report = markdown_report(cells, "Compared", ["note"])
    header = report.splitlines()[4]
    for column in ("trainable params", "peak memory (MiB)", "time (s)", "samples/s", "FLOPs",
                   "final loss", "eval loss", "perplexity", "check ROUGE-L", "check exact match"):
        assert column in header
    assert "| lora | 4 | 1,000 | 1.000 | 700 | 12.5 |" in report
    assert "| full | - |" in report and "failed: 4-bit quantization cannot run" in report
    bar_chart(cells, "peak_memory_bytes", "MiB", tmp_path / "memory.png", scale=1 / 2**20)
    assert (tmp_path / "memory.png").read_bytes().startswith(PNG)


@pytest.mark.slow
def test_compare_command_trains_the_grid_and_writes_report_and_charts(trained_store, tmp_path):
    env = {**os.environ, "LORAFORGE_HOME": str(trained_store.home)}
    env.pop("LORAFORGE_DATABASE_URL", None)
    out = tmp_path / "report"
    done = subprocess.run(
        [sys.executable, "-m", "loraforge", "train", "compare", "--methods", "lora,full",
         "--ranks", "2", "--out", str(out), "--set", "max_steps=3", "--set", "max_length=64",
         "--set", "generate_examples=1", "--set", "max_new_tokens=4", "--set", "save_steps=0"],
        env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr + done.stdout
    report = (out / "report.md").read_text()
    assert "| lora | 2 |" in report and "| full | - |" in report and "failed" not in report
    for chart in ("memory.png", "time.png"):
        assert (out / chart).read_bytes().startswith(PNG)
    assert Path(out / "logs").is_dir()
