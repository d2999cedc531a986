"""Run orchestration: check the request, record the run, train in a temp dir, register the adapter.

Every check that can fail on bad input happens before the first row is written, so a typo
leaves the store untouched. A run that fails while training is recorded as failed with its
error, and leaves no adapter row and no files behind.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path
from typing import Any

from registry import adapters, bases, snapshots
from registry.db import ensure_schema
from registry.settings import get_settings
from trainers.discovery import get_backend
from trainers.errors import TrainerError


def _make_config(config_class: type, overrides: dict[str, Any] | None) -> Any:
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    known = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TrainerError(f"unknown option(s) {', '.join(unknown)} for {config_class.__name__}; "
                           f"valid: {', '.join(sorted(known))}")
    try:
        return config_class(**overrides)
    except (ValueError, TypeError) as exc:
        raise TrainerError(f"bad training config: {exc}") from exc


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
    if snap.counts.get("train", 0) < 1 or not train_file.is_file():
        raise TrainerError(f"snapshot {snap.name!r} has no training examples at {train_file}; "
                           "rebuild it with `loraforge data build`")
    return base_record, snap, train_file


def run_training(
    method: str = "lora",
    base: str = "tiny",
    snapshot: str | None = None,
    adapter_name: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> int:
    """Train an adapter with backend ``method`` and register it; returns the adapter id.

    ``snapshot`` None means the newest snapshot; ``overrides`` are fields of the backend's config
    class (None values are ignored so CLI options can be passed straight through).
    """
    ensure_schema()
    backend = get_backend(method)
    config = _make_config(backend.config_class, overrides)
    base_record, snap, train_file = _resolve_inputs(base, snapshot)
    name = adapter_name or f"{base_record.name}-{method}"
    if not name or "/" in name or ":" in name:
        raise TrainerError(f"adapter name {name!r} must be non-empty without '/' or ':'")

    config_dict = config.to_dict() if hasattr(config, "to_dict") else dataclasses.asdict(config)
    run_id = adapters.start_run(method=method, base_model_id=base_record.id,
                                snapshot_id=snap.id, config=config_dict)
    adapters_dir = get_settings().adapters_dir
    adapters_dir.mkdir(parents=True, exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix=f".run{run_id}-", dir=adapters_dir))
    final_dir: Path | None = None
    try:
        result = backend.train(base_record.model_path, train_file, train_file.parent / "test.jsonl",
                               work_dir, config)
        version = adapters.next_version(name)
        final_dir = adapters_dir / f"{name}-v{version}"
        if final_dir.exists():  # files whose row was deleted; the store is the truth
            shutil.rmtree(final_dir)
        work_dir.rename(final_dir)
        return adapters.finish_run(
            run_id, adapter_name=name, version=version, path=str(final_dir),
            metrics=result.metrics, loss_curve=result.loss_curve,
        )
    except BaseException as exc:
        shutil.rmtree(work_dir, ignore_errors=True)
        if final_dir is not None:
            shutil.rmtree(final_dir, ignore_errors=True)
        adapters.fail_run(run_id, f"{type(exc).__name__}: {exc}")
        if isinstance(exc, Exception) and not isinstance(exc, TrainerError):
            raise TrainerError(f"training run #{run_id} failed: {exc}; "
                               "rerun with --debug for the traceback") from exc
        raise
