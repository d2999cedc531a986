"""Run orchestration: check the request, record the run, train in a temp dir, register the adapter.

Every check that can fail on bad input happens before the first row is written, so a typo
leaves the store untouched. A run that fails while training is recorded as failed with its
error, and leaves no adapter row and no files behind. Checkpoints live apart from the adapter
(``adapters/.checkpoints/run-N``) with an owner file naming the process, so a run killed with
SIGKILL is recognised as interrupted and ``resume=True`` finishes it under the same run id.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import shutil
import socket
import tempfile
import types
import typing
from pathlib import Path
from typing import Any

from core.settings import get_settings
from registry import adapters, bases, snapshots
from registry.db import ensure_schema
from registry.files import exclusive_lock
from trainers import distributed
from trainers.discovery import get_backend
from trainers.errors import TrainerError

OWNER_FILE = "owner.json"


def make_config(config_class: type, overrides: dict[str, Any] | None) -> Any:
    """The backend's config from ``overrides`` (None values ignored); bad values → TrainerError."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    known = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TrainerError(f"unknown option(s) {', '.join(unknown)} for {config_class.__name__}; "
                           f"valid: {', '.join(sorted(known))}")
    try:
        hints = typing.get_type_hints(config_class)
    except Exception:  # a plugin's annotations we cannot resolve: its own checks judge values
        hints = {}
    for key, value in list(overrides.items()):
        if isinstance(value, str) and _fits(1.0, hints.get(key)) and not _fits(value,
                                                                               hints.get(key)):
            try:  # YAML 1.1 reads 2e-4 (no dot) as text
                overrides[key] = value = float(value)
            except ValueError:
                pass
        if not _fits(value, hints.get(key, Any)):
            raise TrainerError(f"{key} must be {_describe(hints[key])}, got {value!r}")
    try:
        return config_class(**overrides)
    except (ValueError, TypeError) as exc:
        raise TrainerError(f"bad training config: {exc}") from exc


def _fits(value: Any, hint: Any) -> bool:
    """Whether a recipe or --set value has the field's type (YAML gives str, int, float, bool)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    return True  # lists, dicts and the rest: the config's own checks judge them


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(map(str, args))
    return {bool: "true or false", int: "a whole number", float: "a number", str: "text",
            type(None): "empty (null)"}.get(hint, getattr(hint, "__name__", str(hint)))


_make_config = make_config  # the name older callers import


RECIPE_KEYS = {"method", "base", "dataset", "name", "config"}


def load_recipe(path: Path) -> dict[str, Any]:
    """A YAML recipe: ``method``, ``base``, ``dataset``, ``name`` and a ``config`` mapping."""
    import yaml

    try:
        recipe = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise TrainerError(f"cannot read recipe {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise TrainerError(f"recipe {path} is not UTF-8 text; save it as UTF-8 YAML") from exc
    except yaml.YAMLError as exc:
        raise TrainerError(f"recipe {path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    if not isinstance(recipe, dict) or set(recipe) - RECIPE_KEYS \
            or not isinstance(recipe.get("config", {}), dict):
        raise TrainerError(f"recipe {path} must be a mapping with keys among "
                           f"{', '.join(sorted(RECIPE_KEYS))} and config a mapping")
    return recipe


def parse_settings(settings: list[str]) -> dict[str, Any]:
    """``key=value`` strings to a dict; values are read as YAML scalars (8, 3e-4, true, [a, b])."""
    import yaml

    parsed: dict[str, Any] = {}
    for item in settings:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise TrainerError(f"--set expects key=value, got {item!r}")
        try:
            parsed[key.strip()] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            parsed[key.strip()] = value
        if isinstance(parsed[key.strip()], str):
            parsed[key.strip()] = _number_or_text(parsed[key.strip()])
    return parsed


def _number_or_text(text: str) -> Any:
    """YAML 1.1 reads ``2e-3`` (no dot) as a string; people mean the number."""
    try:
        return float(text) if any(c in text.lower() for c in ".e") else int(text)
    except ValueError:
        return text


def _count_examples(path: Path) -> int:
    if not path.is_file():
        return 0
    with open(path, encoding="utf-8") as lines:
        return sum(1 for line in lines if line.strip())


def _resolve_inputs(base: str, snapshot: str | None) -> tuple[bases.BaseRecord,
                                                              snapshots.SnapshotRecord, Path]:
    base_record = bases.find_base(base)
    if base_record is None:
        raise TrainerError(f"no base model called {base!r}; build one with `loraforge base init` "
                           "or add one with `loraforge base add NAME SOURCE`")
    if base_record.path is not None and not Path(base_record.path).is_dir():
        raise TrainerError(f"base {base!r} points at {base_record.path}, which is gone; "
                           "rebuild it or register it again")
    snap = snapshots.find_snapshot(snapshot)
    if snap is None:
        raise TrainerError(
            f"no dataset snapshot called {snapshot!r}; see `loraforge data list`" if snapshot
            else "no dataset snapshots yet; build one with `loraforge data build`"
        )
    train_file = Path(snap.path or "") / "train.jsonl"
    if _count_examples(train_file) < 1:
        raise TrainerError(f"snapshot {snap.name!r} has no training examples at {train_file}; "
                           "rebuild it with `loraforge data build`")
    return base_record, snap, train_file


def checkpoints_dir(run_id: int) -> Path:
    return get_settings().adapters_dir / ".checkpoints" / f"run-{run_id}"


def _owner_alive(owner: dict[str, Any]) -> bool:
    if owner.get("host") != socket.gethostname():
        return True  # another machine's process: we can't tell, so don't touch it
    try:
        os.kill(int(owner["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, ValueError):
        return True
    return not _zombie(int(owner["pid"]))


def _zombie(pid: int) -> bool:
    """A killed process nobody has reaped yet (a launcher's worker whose launcher died too, in a
    container whose init does not reap) still answers kill(pid, 0)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def _read_owner(run_id: int) -> dict[str, Any] | None:
    owner = checkpoints_dir(run_id) / OWNER_FILE
    return json.loads(owner.read_text()) if owner.is_file() else None


def mark_interrupted_runs() -> list[int]:
    """Mark runs whose process is gone (killed, machine lost) as failed; returns their ids.

    Their temporary adapter directories are removed; their checkpoints stay for ``--resume``.
    """
    interrupted = []
    for run in adapters.list_runs():
        owner = _read_owner(run.id)
        if run.status != "running" or owner is None or _owner_alive(owner):
            continue
        adapters.fail_run(run.id, f"interrupted: process {owner['pid']} is gone; "
                                  "`loraforge train --resume` continues it")
        for partial in get_settings().adapters_dir.glob(f".run{run.id}-*"):
            shutil.rmtree(partial, ignore_errors=True)
        interrupted.append(run.id)
    return interrupted


def _resumable_run() -> tuple[adapters.RunRecord, dict[str, Any]]:
    mark_interrupted_runs()
    for run in reversed(adapters.list_runs()):
        owner = _read_owner(run.id)
        if run.status == "failed" and owner is not None \
                and any(checkpoints_dir(run.id).glob("checkpoint-*/trainer_state.json")):
            return run, owner
    raise TrainerError("no interrupted run with a checkpoint to resume; start a new run "
                       "without --resume")


def _check_base_kind(backend: Any, method: str, base: bases.BaseRecord) -> None:
    """A causal backend cannot train a diffusion LM and vice versa; backends say which they take
    with ``base_kind`` (plugins without it train causal LMs)."""
    wanted = getattr(backend, "base_kind", "causal")
    if base.kind != wanted:
        hint = ("train it with `loraforge train --method masked-diffusion`"
                if base.kind == "masked_diffusion"
                else "pick a masked-diffusion base (`loraforge base init --kind masked-diffusion`)")
        raise TrainerError(f"base {base.name!r} is a {base.kind.replace('_', '-')} LM but trainer "
                           f"{method!r} trains {wanted.replace('_', '-')} LMs; {hint}")


def _accepts_checkpoints(backend: Any) -> bool:
    return "checkpoint_dir" in inspect.signature(backend.train).parameters


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """What every process of a launch needs to train one run, agreed before training starts:
    the main process decides it and broadcasts it (see trainers/distributed.py)."""

    run_id: int
    method: str
    adapter_name: str
    config: dict[str, Any]
    model_path: str
    train_file: Path
    work_dir: Path
    checkpoint_dir: Path
    resume: bool


def run_training(
    method: str = "lora",
    base: str = "tiny",
    snapshot: str | None = None,
    adapter_name: str | None = None,
    overrides: dict[str, Any] | None = None,
    resume: bool = False,
) -> int:
    """Train an adapter with backend ``method`` and register it; returns the adapter id.

    ``snapshot`` None means the newest snapshot; ``overrides`` are fields of the backend's config
    class (None values are ignored so CLI options can be passed straight through). ``resume``
    finishes the newest interrupted run from its last checkpoint, with that run's method, base,
    snapshot, config and adapter name; the other arguments are then ignored.

    Under ``accelerate launch`` or ``torchrun`` every process calls this: the main process
    checks the request, records the run and broadcasts the plan; all train together; the main
    process alone scores, saves and registers, and every process returns the same adapter id.
    """
    ensure_schema()
    launch = distributed.current()
    distributed.start()
    plan, error = None, None
    if launch.is_main:
        try:
            plan = _plan_run(method, base, snapshot, adapter_name, overrides, resume,
                             launch.world_size)
        except BaseException as exc:  # every process must hear of it, or they would wait
            error = exc
    plan, message = distributed.share((plan, None if error is None else str(error)))
    if error is not None:
        raise error
    if message is not None:
        raise TrainerError(message)
    with distributed.stop_on_sigterm():
        adapter_id = _train_and_register(plan)
    distributed.finish()
    return adapter_id


def _plan_run(method: str, base: str, snapshot: str | None, adapter_name: str | None,
              overrides: dict[str, Any] | None, resume: bool, world_size: int) -> RunPlan:
    """Check the request and record the run (every check first, so bad input writes nothing)."""
    run_id: int | None = None
    if resume:
        run, owner = _resumable_run()
        run_id, method, adapter_name = run.id, run.method, owner.get("adapter_name")
        base, snapshot, overrides = run.base_name or base, run.snapshot_name, run.config
    else:
        mark_interrupted_runs()
    backend = get_backend(method)
    config = make_config(backend.config_class, overrides)
    base_record, snap, train_file = _resolve_inputs(base, snapshot)
    name = adapter_name or f"{base_record.name}-{method}"
    if not name or "/" in name or ":" in name:
        raise TrainerError(f"adapter name {name!r} must be non-empty without '/' or ':'")
    if resume and not _accepts_checkpoints(backend):
        raise TrainerError(f"trainer {method!r} cannot checkpoint, so it cannot resume")
    batch_size = getattr(config, "batch_size", world_size)
    if world_size > 1 and batch_size % world_size:
        raise TrainerError(f"batch_size {batch_size} is the global batch (examples per "
                           f"optimizer step) and must split evenly over {world_size} processes; "
                           f"use a multiple of {world_size}")
    _check_base_kind(backend, method, base_record)
    if hasattr(backend, "preflight"):
        backend.preflight(base_record.model_path, config)

    config_dict = config.to_dict() if hasattr(config, "to_dict") else dataclasses.asdict(config)
    if run_id is None:
        run_id = adapters.start_run(method=method, base_model_id=base_record.id,
                                    snapshot_id=snap.id, config=config_dict)
    else:
        adapters.restart_run(run_id)
    ckpt_dir = checkpoints_dir(run_id)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    (ckpt_dir / OWNER_FILE).write_text(json.dumps(
        {"pid": os.getpid(), "host": socket.gethostname(), "adapter_name": name}))
    work_dir = Path(tempfile.mkdtemp(prefix=f".run{run_id}-", dir=get_settings().adapters_dir))
    return RunPlan(run_id=run_id, method=method, adapter_name=name, config=config_dict,
                   model_path=base_record.model_path, train_file=train_file, work_dir=work_dir,
                   checkpoint_dir=ckpt_dir, resume=resume)


def _train_and_register(plan: RunPlan) -> int:
    """Train on every process, then register on the main one; the adapter id everywhere."""
    backend = get_backend(plan.method)
    config = make_config(backend.config_class, plan.config)
    if not distributed.is_main():
        # A failure here ends this process; the launcher then stops the main one, whose
        # handler records the run as failed. Waiting for the others would hang a collective.
        backend.train(plan.model_path, plan.train_file, plan.train_file.parent / "test.jsonl",
                      plan.work_dir, config, **_checkpoint_kwargs(backend, plan))
        adapter_id, message = distributed.share((None, None))
        if message is not None:
            raise TrainerError(message)
        return adapter_id
    adapters_dir = get_settings().adapters_dir
    final_dir: Path | None = None
    try:
        result = backend.train(plan.model_path, plan.train_file,
                               plan.train_file.parent / "test.jsonl", plan.work_dir, config,
                               **_checkpoint_kwargs(backend, plan))
        (plan.work_dir / "train_metrics.json").write_text(json.dumps(
            {"method": plan.method, "config": plan.config, "metrics": result.metrics,
             "loss_curve": result.loss_curve}, indent=1))
        # Two trainings of one name may end at once (two users, two jobs): the version, the
        # folder and the row are claimed together, one job at a time.
        with exclusive_lock(adapters_dir / ".register.lock"):
            version = adapters.next_version(plan.adapter_name)
            final_dir = adapters_dir / f"{plan.adapter_name}-v{version}"
            if final_dir.exists():  # files whose row was deleted; the store is the truth
                shutil.rmtree(final_dir)
            plan.work_dir.rename(final_dir)
            adapter_id = adapters.finish_run(
                plan.run_id, adapter_name=plan.adapter_name, version=version,
                path=str(final_dir), metrics=result.metrics, loss_curve=result.loss_curve,
            )
        shutil.rmtree(plan.checkpoint_dir, ignore_errors=True)
    except BaseException as exc:
        with distributed.sigterm_deferred():  # a lost process: the launcher stops us next
            shutil.rmtree(plan.work_dir, ignore_errors=True)
            if final_dir is not None:
                shutil.rmtree(final_dir, ignore_errors=True)
            if not any(plan.checkpoint_dir.glob("checkpoint-*")):  # nothing to resume from
                shutil.rmtree(plan.checkpoint_dir, ignore_errors=True)
            adapters.fail_run(plan.run_id, "interrupted; `loraforge train --resume` continues "
                              "it from its last checkpoint" if isinstance(exc, KeyboardInterrupt)
                              else f"{type(exc).__name__}: {exc}")
        # Under a launch, exiting is how the others learn of it: the launcher stops them.
        if isinstance(exc, Exception) and not isinstance(exc, TrainerError):
            raise TrainerError(f"training run #{plan.run_id} failed: {exc}; "
                               "rerun with --debug for the traceback") from exc
        raise
    return distributed.share((adapter_id, None))[0]


def _checkpoint_kwargs(backend: Any, plan: RunPlan) -> dict[str, Any]:
    return {"checkpoint_dir": plan.checkpoint_dir, "resume": plan.resume} \
        if _accepts_checkpoints(backend) else {}
