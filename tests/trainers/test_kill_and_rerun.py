"""``kill -9`` in the middle of a command that writes files, then the same command again.

A killed command may leave a hidden temp folder behind, but never a row that points at partial
files, nor a half-written folder under the final name; and running it again succeeds. Each
command is killed the moment its temp folder appears, while it writes (a command that finishes
before the poll sees the folder is killed at its end, and the same checks apply).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from registry.snapshots import find_snapshot, list_snapshots
from tests.trainers.conftest import TrainedStore, _store_at, insert_qa_pairs, read_medquad

pytestmark = pytest.mark.slow


def _env(home: Path) -> dict[str, str]:
    env = {**os.environ, "LORAFORGE_HOME": str(home), "COLUMNS": "200"}
    env.pop("LORAFORGE_DATABASE_URL", None)
    return env


def _kill_while_writing(args: list[str], home: Path, temp_glob: str, within: Path,
                        deadline_s: float = 240) -> bool:
    """Start ``loraforge ARGS``; SIGKILL it as soon as ``within/temp_glob`` exists. Returns
    whether it was killed while writing (False: it finished or failed first)."""
    proc = subprocess.Popen([sys.executable, "-m", "loraforge", *args], env=_env(home),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, writing = time.monotonic() + deadline_s, False
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if any(within.glob(temp_glob)):
                writing = True
                break
            time.sleep(0.005)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    print(f"{' '.join(args[:2])}: killed {'while writing' if writing else 'after it ended'}")
    return writing


def _run(args: list[str], home: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "loraforge", *args], env=_env(home),
                          capture_output=True, text=True, timeout=600, check=False)


def test_a_killed_snapshot_build_leaves_no_row_on_partial_files_and_reruns(tmp_path: Path):
    with _store_at(tmp_path / "home") as home:
        insert_qa_pairs(read_medquad(limit=80))
        args = ["data", "build", "--name", "killed", "--clusters", "4", "--per-cluster", "5"]
        _kill_while_writing(args, home, ".killed-*", home / "datasets")

        found = find_snapshot("killed")
        if found is not None:  # a row exists only once its folder is whole
            assert (Path(found.path) / "train.jsonl").is_file()

        done = _run(args, home)
        assert done.returncode == 0, done.stderr[-2000:]
        assert [s.name for s in list_snapshots()].count("killed") == 1
        snapshot = find_snapshot("killed")
        lines = (Path(snapshot.path) / "train.jsonl").read_text().splitlines()
        assert len(lines) == snapshot.counts["train"] > 0


def test_a_killed_merge_leaves_no_folder_under_its_name_and_reruns(
        trained_store: TrainedStore, tmp_path: Path):
    from registry.adapters import get_adapter

    label = get_adapter(trained_store.adapter_id).label
    out = tmp_path / "merged"
    args = ["adapters", "merge", label, "--out", str(out)]
    _kill_while_writing(args, trained_store.home, ".merged-*", tmp_path)
    assert not out.exists() or (out / "model.safetensors").is_file()

    done = _run(args if not out.exists() else [*args[:-1], str(tmp_path / "again")],
                trained_store.home)
    assert done.returncode == 0, done.stderr[-2000:]
    merged = out if (out / "model.safetensors").is_file() else tmp_path / "again"
    assert (merged / "model.safetensors").is_file() and (merged / "config.json").is_file()


def test_a_killed_gguf_base_add_leaves_no_row_on_partial_files_and_reruns(tmp_path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from publishing.gguf_file import quantization, write_model
    from registry.bases import find_base
    from tests.ui.conftest import _build_base

    _build_base(tmp_path / "source")  # a tiny Llama with a byte-level BPE chat tokenizer
    gguf = tmp_path / "tiny.gguf"
    write_model(gguf, AutoModelForCausalLM.from_pretrained(tmp_path / "source"),
                AutoTokenizer.from_pretrained(tmp_path / "source"), name="tiny",
                quant=quantization("f32"))
    with _store_at(tmp_path / "home") as home:
        args = ["base", "add", "from-gguf", "--from-gguf", str(gguf)]
        killed_writing = _kill_while_writing(args, home, ".from-gguf-*", home / "bases")
        base = find_base("from-gguf")
        if base is not None:  # it finished before the kill: whole files under its row
            assert (Path(base.path) / "model.safetensors").is_file()
            return
        assert killed_writing
        done = _run(args, home)
        assert done.returncode == 0, done.stderr[-2000:]
        base = find_base("from-gguf")
        assert base is not None and (Path(base.path) / "model.safetensors").is_file()
        AutoModelForCausalLM.from_pretrained(base.path)
