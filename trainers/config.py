"""Training configs: dataclasses whose field help is the CLI's help and whose dict is recorded."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class LoraTrainConfig:
    """LoRA on every linear layer by default; learning rate tuned for the tiny base."""

    rank: int = field(default=8, metadata={"help": "LoRA rank r: size of the low-rank update."})
    alpha: float = field(
        default=16, metadata={"help": "LoRA alpha; the update is scaled by alpha / rank."}
    )
    dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input, 0 to 1."})
    target_modules: str | list[str] = field(
        default="all-linear",
        metadata={"help": "Modules to adapt: 'all-linear' or a list such as ['q_proj', 'v_proj']."},
    )
    learning_rate: float = field(
        default=3e-3,
        metadata={"help": "Peak learning rate. The tiny base wants ~3e-3; 7B models ~2e-4."},
    )
    epochs: float = field(default=3.0, metadata={"help": "Passes over the training split."})
    max_steps: int | None = field(
        default=None, metadata={"help": "Stop after this many optimizer steps; overrides epochs."}
    )
    batch_size: int = field(default=4, metadata={"help": "Examples per optimizer step."})
    max_length: int = field(
        default=512, metadata={"help": "Tokens per example; longer chats are truncated."}
    )
    warmup_ratio: float = field(
        default=0.05, metadata={"help": "Share of steps spent warming up the learning rate."}
    )
    logging_steps: int = field(default=5, metadata={"help": "Record the loss every N steps."})
    gradient_checkpointing: bool = field(
        default=False,
        metadata={"help": "Recompute activations to save memory; slower, worth it on big models."},
    )
    seed: int = field(default=0, metadata={"help": "Seed for the LoRA init and data order."})

    def __post_init__(self) -> None:
        if isinstance(self.target_modules, tuple):
            self.target_modules = list(self.target_modules)
        checks = [
            (self.rank >= 1, f"rank must be at least 1, got {self.rank}"),
            (self.alpha > 0, f"alpha must be positive, got {self.alpha}"),
            (0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}"),
            (self.learning_rate > 0, f"learning rate must be positive, got {self.learning_rate}"),
            (self.epochs > 0, f"epochs must be positive, got {self.epochs}"),
            (self.max_steps is None or self.max_steps >= 1,
             f"max steps must be at least 1, got {self.max_steps}"),
            (self.batch_size >= 1, f"batch size must be at least 1, got {self.batch_size}"),
            (self.max_length >= 16,
             f"max length must be at least 16 tokens, got {self.max_length}"),
            (0 <= self.warmup_ratio < 1,
             f"warmup ratio must be in [0, 1), got {self.warmup_ratio}"),
            (self.logging_steps >= 1,
             f"logging steps must be at least 1, got {self.logging_steps}"),
            (self.target_modules == "all-linear"
             or (isinstance(self.target_modules, list) and len(self.target_modules) > 0
                 and all(isinstance(m, str) for m in self.target_modules)),
             f"target modules must be 'all-linear' or a list of module names, "
             f"got {self.target_modules!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
