"""What every run records: sizes, memory, speed and the loss curve, comparable across backends."""

from __future__ import annotations

import re
import resource
import string
import sys
import time
from typing import Any

import torch
from transformers import TrainerCallback


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; 4-bit weights count as the values they hold."""

    def size(p: torch.Tensor) -> int:
        # bitsandbytes stores two 4-bit values per uint8 element.
        return p.numel() * 2 if type(p).__name__ == "Params4bit" else p.numel()

    trainable = sum(size(p) for p in model.parameters() if p.requires_grad)
    total = sum(size(p) for p in model.parameters())
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


class JobProgressCallback(TrainerCallback):
    """Reports step, total, the latest loss and an ETA to a parent job (core.jobs) after every
    step, so the Train tab can draw a real progress bar."""

    def __init__(self) -> None:
        self.loss: float | None = None
        self.started = time.monotonic()
        self.first_step = 0

    def on_train_begin(self, args, state, control, **kwargs) -> None:
        self.started, self.first_step = time.monotonic(), int(state.global_step)

    def on_log(self, args, state, control, logs: dict[str, Any] | None = None, **kwargs) -> None:
        if logs and "loss" in logs:
            self.loss = round(float(logs["loss"]), 4)

    def on_step_end(self, args, state, control, **kwargs) -> None:
        from core import jobs

        if not state.is_world_process_zero:
            return
        done = int(state.global_step) - self.first_step
        left = max(int(state.max_steps) - int(state.global_step), 0)
        eta = (time.monotonic() - self.started) / done * left if done else None
        jobs.emit("progress", step=int(state.global_step), total=int(state.max_steps),
                  loss=self.loss, eta_s=round(eta, 1) if eta is not None else None)


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


def curves_from_log_history(history: list[dict[str, Any]]) -> tuple[list[dict], list[dict]]:
    """(train loss curve, eval loss curve) from ``trainer.state.log_history``.

    The history is saved in every checkpoint, so a resumed run's curve starts at step 1.
    """
    train = [{"step": int(e["step"]), "loss": round(float(e["loss"]), 4)}
             for e in history if "loss" in e and "step" in e]
    evals = [{"step": int(e["step"]), "eval_loss": round(float(e["eval_loss"]), 4)}
             for e in history if "eval_loss" in e and "step" in e]
    return train, evals


_PUNCTUATION = re.compile(f"[{re.escape(string.punctuation)}]")


def normalize_answer(text: str) -> str:
    """Lowercase, no punctuation, single spaces: what exact match compares."""
    return " ".join(_PUNCTUATION.sub(" ", text.lower()).split())


def score_answers(model, tokenizer, chats: list[list[dict]], max_new_tokens: int = 64,
                  keep_examples: int = 8, answer=None) -> dict[str, Any]:
    """ROUGE-L F1 and exact match of the model's answers against each chat's last turn.

    ``answer(model, tokenizer, messages, max_new_tokens)`` writes an answer; greedy decoding
    by default. Keeps the first ``keep_examples`` (question, reference, prediction) triples:
    the study's "actual vs predicted" table.
    """
    from rouge_score import rouge_scorer

    from trainers.generate import generate_answer

    answer = answer or generate_answer

    scorer = rouge_scorer.RougeScorer(["rougeL"])
    rouge, exact, examples = [], [], []
    for chat in chats:
        reference = chat[-1]["content"]
        predicted = answer(model, tokenizer, chat[:-1], max_new_tokens=max_new_tokens)
        rouge.append(scorer.score(reference, predicted)["rougeL"].fmeasure)
        exact.append(float(normalize_answer(reference) == normalize_answer(predicted)))
        if len(examples) < keep_examples:
            question = next((m["content"] for m in reversed(chat[:-1]) if m["role"] == "user"), "")
            examples.append({"question": question, "reference": reference,
                             "predicted": predicted})
    return {
        "rouge_l": round(sum(rouge) / len(rouge), 4) if rouge else None,
        "exact_match": round(sum(exact) / len(exact), 4) if exact else None,
        "generated_examples": len(chats),
        "examples": examples,
    }
