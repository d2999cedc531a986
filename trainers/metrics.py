"""What every run records: sizes, memory, speed and the loss curve, comparable across backends."""

from __future__ import annotations

import resource
import sys
from typing import Any

import torch
from transformers import TrainerCallback


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def reset_peak_memory(device: str) -> None:
    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peak_memory_bytes(device: str) -> int:
    """Peak GPU memory allocated on CUDA; on CPU the process's peak resident set size.

    The CPU figure covers the whole process lifetime, so in a long-lived process it is an upper
    bound for the run rather than the run's own peak.
    """
    if device.startswith("cuda") and torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated())
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)  # macOS reports bytes, Linux KiB


class LossCurveCallback(TrainerCallback):
    """Collects {step, loss} from the trainer's logs as it trains."""

    def __init__(self) -> None:
        self.curve: list[dict[str, float]] = []

    def on_log(self, args, state, control, logs: dict[str, Any] | None = None, **kwargs) -> None:
        if logs and "loss" in logs:
            loss = round(float(logs["loss"]), 4)
            self.curve.append({"step": int(state.global_step), "loss": loss})


def run_metrics(
    *,
    trainable: int,
    total: int,
    device: str,
    wall_seconds: float,
    samples: int,
    tokens: int,
    steps: int,
    loss_curve: list[dict[str, float]],
) -> dict[str, Any]:
    """The flat metrics dict recorded on the run and the adapter (keys are stable)."""
    return {
        "trainable_params": trainable,
        "total_params": total,
        "trainable_percent": round(100 * trainable / total, 3) if total else 0.0,
        "peak_memory_bytes": peak_memory_bytes(device),
        "peak_memory_kind": "cuda_allocated" if device.startswith("cuda") else "process_rss",
        "device": device,
        "wall_seconds": round(wall_seconds, 2),
        "steps": steps,
        "samples_per_second": round(samples / wall_seconds, 3) if wall_seconds else 0.0,
        "tokens_per_second": round(tokens / wall_seconds, 1) if wall_seconds else 0.0,
        "tokens_seen": tokens,
        "initial_loss": loss_curve[0]["loss"] if loss_curve else None,
        "final_loss": loss_curve[-1]["loss"] if loss_curve else None,
    }
