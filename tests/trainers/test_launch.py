"""`loraforge train` under a real `accelerate launch` of 2 processes (gloo, on CPU).

One run row and one adapter per launch; the recorded global batch and step count match the
launch; the adapter loads with plain PEFT; its weights equal a single-process run with the same
global batch and seed (so the gradients really were all-reduced); and a launch killed with -9
resumes under the same launch command with `--resume`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from safetensors.torch import load_file
from sqlalchemy import func, select

from registry.db import session_scope
from registry.models import Adapter, TrainingRun
from tests.trainers.conftest import _store_at, insert_qa_pairs, read_medquad
from tests.ui.conftest import free_port

pytestmark = pytest.mark.slow

# dropout 0: each process draws its own dropout masks, which a single process cannot repeat
SAME_RUN = ["--batch-size", "4", "--max-length", "128", "--set", "dropout=0", "--set",
            "logging_steps=1", "--set", "progress_bar=false", "--set", "generate_examples=1",
            "--set", "max_new_tokens=4"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    from curation.build import build_snapshot
    from trainers.base_model import build_tiny_base

    with _store_at(tmp_path_factory.mktemp("launch") / "home") as home:
        insert_qa_pairs(read_medquad(limit=40))
        build_tiny_base(steps=20)
        build_snapshot(seed=0)
        yield home


def _env(home: Path) -> dict[str, str]:
    env = {**os.environ, "LORAFORGE_HOME": str(home), "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    env.pop("LORAFORGE_DATABASE_URL", None)
    return env


CONFIGS = Path(__file__).resolve().parents[2] / "examples" / "accelerate"


def _launch(processes: int, args: list[str], config: str = "ddp.yaml") -> list[str]:
    """The command line: `accelerate launch` of N processes with one of the shipped configs
    (on a machine without GPUs they run on gloo), or plain python for one."""
    if processes == 1:
        return [sys.executable, "-m", "loraforge", "train", *args]
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
            str(CONFIGS / config), "--num_processes", str(processes),
            "--main_process_port", str(free_port()), "-m", "loraforge", "train", *args]


def _run(command: list[str], home: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(command, env=_env(home), capture_output=True, text=True,
                            timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def _rows(model: type) -> int:
    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(model))


def _adapter(name: str) -> Adapter:
    with session_scope() as session:
        adapter = session.scalars(select(Adapter).filter_by(name=name)).one()
        session.expunge(adapter)
        return adapter


@pytest.fixture(scope="module")
def one_process(store: Path) -> Adapter:
    """The reference: the same run in a single process."""
    _run(_launch(1, ["--name", "one", "--max-steps", "6", *SAME_RUN]), store)
    return _adapter("one")


@pytest.mark.parametrize("config", ["ddp.yaml", "fsdp.yaml"])
def test_two_processes_record_one_run_and_train_what_one_process_trains(
        store: Path, one_process: Adapter, config: str):
    launched = f"two-{config[:-5]}"
    runs, adapters = _rows(TrainingRun), _rows(Adapter)
    _run(_launch(2, ["--name", launched, "--max-steps", "6", *SAME_RUN], config), store)
    assert (_rows(TrainingRun), _rows(Adapter)) == (runs + 1, adapters + 1)

    ddp = _adapter(launched)
    metrics = json.loads((Path(ddp.path) / "train_metrics.json").read_text())
    assert metrics["metrics"]["processes"] == 2
    assert metrics["metrics"]["global_batch_size"] == 4
    assert metrics["metrics"]["steps"] == 6 and len(metrics["loss_curve"]) == 6
    with session_scope() as session:
        run = session.get(TrainingRun, ddp.training_run_id)
        assert run.status == "succeeded"

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    with session_scope() as session:
        base_path = session.get(TrainingRun, ddp.training_run_id).base_model.path
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_path), ddp.path)

    single = one_process
    one = json.loads((Path(single.path) / "train_metrics.json").read_text())
    assert [p["loss"] for p in one["loss_curve"]] == pytest.approx(
        [p["loss"] for p in metrics["loss_curve"]], abs=2e-4)
    ours = load_file(Path(ddp.path) / "adapter_model.safetensors")
    theirs = load_file(Path(single.path) / "adapter_model.safetensors")
    assert ours.keys() == theirs.keys()
    worst = max(float((ours[k] - theirs[k]).abs().max()) for k in ours)
    moved = max(float(ours[k].abs().max()) for k in ours if "lora_B" in k)
    assert moved > 1e-3, "the adapter did not train"
    assert worst < 1e-5, f"2-process weights differ from 1 process by {worst}"


def test_a_launch_killed_with_minus_9_resumes_under_the_same_launch(store: Path):
    args = ["--name", "resumed", "--max-steps", "30", *SAME_RUN, "--set", "save_steps=4"]
    runs, adapters = _rows(TrainingRun), _rows(Adapter)
    checkpoints = store / "adapters" / ".checkpoints"
    launch = subprocess.Popen(_launch(2, args), env=_env(store), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    try:
        while launch.poll() is None and time.monotonic() < deadline:
            if list(checkpoints.glob("run-*/checkpoint-4/trainer_state.json")):
                break
            time.sleep(0.05)
        assert launch.poll() is None, "the launch ended before its first checkpoint"
    finally:  # the launcher and both trainers (torch's launcher puts them in new sessions)
        family = [launch, *psutil.Process(launch.pid).children(recursive=True)]
        for process in family:
            with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
                process.send_signal(signal.SIGKILL)
        launch.wait(timeout=60)
    assert _rows(Adapter) == adapters

    _run(_launch(2, ["--resume"]), store)

    assert (_rows(TrainingRun), _rows(Adapter)) == (runs + 1, adapters + 1)
    resumed = _adapter("resumed")
    metrics = json.loads((Path(resumed.path) / "train_metrics.json").read_text())["metrics"]
    assert metrics["steps"] == 30 and metrics["processes"] == 2
    assert metrics["resumed_from_step"] >= 4
    with session_scope() as session:
        assert session.get(TrainingRun, resumed.training_run_id).status == "succeeded"


def test_a_process_lost_mid_run_fails_the_run_once_and_leaves_no_adapter(store: Path):
    args = ["--name", "lost", "--max-steps", "40", *SAME_RUN, "--set", "save_steps=4"]
    runs, adapters = _rows(TrainingRun), _rows(Adapter)
    checkpoints = store / "adapters" / ".checkpoints"
    launch = subprocess.Popen(_launch(2, args), env=_env(store), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while launch.poll() is None and time.monotonic() < deadline:
        if list(checkpoints.glob("run-*/checkpoint-4/trainer_state.json")):
            break
        time.sleep(0.05)
    assert launch.poll() is None, "the launch ended before its first checkpoint"
    second = [p for p in psutil.Process(launch.pid).children(recursive=True)
              if p.environ().get("RANK") == "1"]
    assert len(second) == 1
    second[0].send_signal(signal.SIGKILL)  # as the OOM killer would
    _, stderr = launch.communicate(timeout=300)

    assert launch.returncode != 0
    assert (_rows(TrainingRun), _rows(Adapter)) == (runs + 1, adapters)
    with session_scope() as session:
        run = session.scalars(select(TrainingRun).order_by(TrainingRun.id.desc())).first()
        assert run.status == "failed" and run.error, stderr[-2000:]
    assert not list((store / "adapters").glob("lost-v*"))
    assert not list((store / "adapters").glob(f".run{run.id}-*"))

    _run(_launch(2, ["--resume"]), store)
    assert (_rows(TrainingRun), _rows(Adapter)) == (runs + 1, adapters + 1)
    assert _adapter("lost").training_run_id == run.id
