"""The interface every trainer backend implements, built-in or from a plugin package."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


@dataclass
class TrainResult:
    """What a backend hands back: the run's metrics and its loss curve (list of {step, loss})."""

    metrics: dict[str, Any]
    loss_curve: list[dict[str, float]] = field(default_factory=list)


@runtime_checkable
class TrainerBackend(Protocol):
    """Trains one adapter from a base model and a snapshot's jsonl files.

    ``train`` writes a standard PEFT adapter (``adapter_config.json`` +
    ``adapter_model.safetensors``) or, for full fine-tuning, a transformers model into
    ``output_dir``; the caller owns the registry. Backends that can checkpoint accept the
    keyword arguments ``checkpoint_dir`` (a directory that survives a crash) and ``resume``
    (continue from the newest checkpoint there); ``run_training`` passes them only to a
    ``train`` that declares them. An optional ``preflight(model_path, config)`` raises
    ``TrainerError`` for a request that cannot work, before any row is written.
    """

    name: str
    config_class: type

    def train(
        self,
        model_path: str,
        train_file: Path,
        eval_file: Path | None,
        output_dir: Path,
        config: Any,
    ) -> TrainResult: ...
