"""``loraforge train`` from the command line: bad configs give one line and write nothing; an
interrupted run resumes to the end; recipes, trainer listing and plugin scaffolding work."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loraforge import cli
from registry.adapters import get_adapter, list_adapters, list_runs
from registry.snapshots import create_snapshot
from trainers.discovery import discover_backends
from trainers.run import load_recipe, make_config

REPO_ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((REPO_ROOT / "examples" / "recipes").glob("*.yaml"))


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    """The console script's own entry point, in-process: exit code, stdout, stderr."""
    argv = sys.argv
    sys.argv = ["loraforge", *args]
    try:
        cli.run()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        sys.argv = argv
    out = capsys.readouterr()
    return code, out.out, out.err


def _store_with_bad_inputs(trained: Path) -> None:
    """A fresh store whose base and snapshot are the trained store's files, plus bad ones.

    A separate store, because an empty snapshot would become the newest one, which runs
    without --dataset train on.
    """
    from trainers.base_model import register_base

    register_base("tiny", str(trained / "bases" / "tiny"))
    snapshot_dir = next(p for p in sorted((trained / "datasets").iterdir())
                        if (p / "train.jsonl").is_file() and (p / "train.jsonl").stat().st_size)
    create_snapshot(name="qa", kind="qa", params={}, seed=0, content_hash="1" * 64,
                    counts={"train": 1, "test": 1}, token_stats={}, path=str(snapshot_dir),
                    members=[])
    empty = trained.parent / "empty-snapshot"
    empty.mkdir(exist_ok=True)
    (empty / "train.jsonl").write_text("")
    create_snapshot(name="empty", kind="qa", params={}, seed=0, content_hash="0" * 64,
                    counts={"train": 0, "test": 0}, token_stats={}, path=str(empty), members=[])
    copy = trained.parent / "gone-base"
    shutil.copytree(trained / "bases" / "tiny", copy, dirs_exist_ok=True)
    register_base("gone", str(copy))
    shutil.rmtree(copy)
    register_base("offline", "no-such-org/no-such-model")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "nope"], "unknown training method 'nope'; available: dora, full, "),
        (["--rank", "0"], "rank must be at least 1"),
        (["--set", "target_modules=[q_proj, nope_proj]"], "target module(s) nope_proj not found"),
        (["--base", "gone"], "points at"),
        (["--base", "offline"], "cannot load a model from 'no-such-org/no-such-model'"),
        (["--dataset", "empty"], "snapshot 'empty' has no training examples"),
        (["--set", "ranks=4"], "unknown option(s) ranks"),
        (["--set", "rank"], "--set expects key=value"),
        (["--method", "full", "--rank", "4"], "unknown option(s) rank"),
        (["--recipe", "no-such-recipe.yaml"], "cannot read recipe"),
    ],
)
def test_bad_config_gives_one_line_a_nonzero_exit_and_no_row(trained_store, home, capsys, args,
                                                              message):
    _store_with_bad_inputs(trained_store.home)
    runs, adapters = len(list_runs()), len(list_adapters())
    code, _, err = run_cli(capsys, "train", "--max-steps", "1", "--dataset", "qa", *args)
    assert code == 1
    errors = [line for line in err.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: "), err
    assert message in errors[0]
    assert "Traceback" not in err
    assert (len(list_runs()), len(list_adapters())) == (runs, adapters)
    assert not (home / "adapters").exists() or not any((home / "adapters").iterdir())


def test_trainers_list_names_every_backend_and_its_package(capsys):
    code, out, _ = run_cli(capsys, "trainers", "list")
    assert code == 0
    rows = {line.split("│")[1].strip(): line for line in out.splitlines()
            if line.startswith("│") and line.split("│")[1].strip()}
    assert {"lora", "qlora", "loraplus", "pissa", "dora", "full", "masked-diffusion"} <= set(rows)
    assert "LoraPlusConfig" in rows["loraplus"]


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipes_open_with_their_command_and_build_a_valid_config(recipe):
    first = recipe.read_text().splitlines()[0]
    assert first == f"# loraforge train --recipe examples/recipes/{recipe.name}"
    plan = load_recipe(recipe)
    backend = discover_backends()[plan["method"]]
    make_config(backend.config_class, plan.get("config"))


def test_recipes_cover_every_built_in_method():
    assert {load_recipe(r)["method"] for r in RECIPES} >= {"lora", "qlora", "loraplus", "pissa",
                                                            "dora", "full"}


def _wait_for(path_glob: str, root: Path, deadline_s: float, proc: subprocess.Popen) -> Path:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        found = sorted(root.glob(path_glob))
        if found:
            return found[0]
        if proc.poll() is not None:
            pytest.fail(f"the run ended (exit {proc.returncode}) before a checkpoint appeared")
        time.sleep(0.2)
    pytest.fail(f"no {path_glob} under {root} within {deadline_s} s")


@pytest.mark.slow
def test_a_run_killed_mid_training_resumes_and_finishes(trained_store):
    """Under --low-memory, so that its checkpointed activations and returned memory are
    exercised through a whole run and a resume too."""
    env = {**os.environ, "LORAFORGE_HOME": str(trained_store.home)}
    env.pop("LORAFORGE_DATABASE_URL", None)
    command = [sys.executable, "-m", "loraforge", "train", "--name", "resumed", "--low-memory",
               "--max-steps", "24", "--max-length", "64", "--batch-size", "2",
               "--set", "save_steps=4", "--set", "logging_steps=2",
               "--set", "generate_examples=1", "--set", "progress_bar=false"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    checkpoints = trained_store.home / "adapters" / ".checkpoints"
    _wait_for("run-*/checkpoint-8/trainer_state.json", checkpoints, 300, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed = list_runs()[-1]
    assert killed.status == "running"  # SIGKILL left no chance to record anything

    resumed = subprocess.run([sys.executable, "-m", "loraforge", "train", "--resume"], env=env,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    run = next(r for r in list_runs() if r.id == killed.id)
    assert run.status == "succeeded"
    assert run.config["low_memory"] and run.config["gradient_checkpointing"]
    assert run.metrics["steps"] == 24 and run.metrics["resumed_from_step"] >= 8
    assert run.loss_curve[0]["step"] == 2 and run.loss_curve[-1]["step"] == 24
    adapter = get_adapter("resumed")
    assert adapter.training_run_id == killed.id and Path(adapter.path).is_dir()
    leftovers = [p.name for p in (trained_store.home / "adapters").iterdir()
                 if p.name.startswith(f".run{killed.id}-")]
    assert leftovers == [] and not (checkpoints / f"run-{killed.id}").exists()
    saved = json.loads((Path(adapter.path) / "train_metrics.json").read_text())
    assert saved["metrics"]["steps"] == 24


def test_resume_without_an_interrupted_run_says_so(trained_store, capsys):
    code, _, err = run_cli(capsys, "train", "--resume")
    assert code == 1 and "no interrupted run with a checkpoint" in err


def test_plugin_new_scaffolds_a_package_that_passes_the_kit(tmp_path, capsys, monkeypatch):
    import tomllib

    code, out, _ = run_cli(capsys, "plugin", "new", "my-vera", "--dir", str(tmp_path))
    assert code == 0, out
    root = tmp_path / "loraforge-my-vera"
    project = tomllib.loads((root / "pyproject.toml").read_text())
    assert project["project"]["entry-points"]["loraforge.trainers"] == {
        "my-vera": "loraforge_my_vera.backend:MyVeraBackend"}
    code, _, err = run_cli(capsys, "plugin", "new", "Bad Name", "--dir", str(tmp_path))
    assert code == 1 and "lowercase" in err
    monkeypatch.syspath_prepend(str(root))
    from loraforge_my_vera.backend import MyVeraBackend  # type: ignore[import-not-found]

    from trainers.testing import check_backend

    result = check_backend(MyVeraBackend(), tmp_path / "kit")
    assert result.metrics["trainable_params"] > 0
