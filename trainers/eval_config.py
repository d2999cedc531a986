"""How ``loraforge eval`` asks and scores, in a module of its own: the CLI builds its options
from it, and must not import transformers to print ``--help``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from trainers.errors import TrainerError


@dataclass
class EvalConfig:
    """How ``loraforge eval`` asks and scores; stored with every row so results compare."""

    split: Literal["test", "validation", "train"] = field(default="test", metadata={
        "help": "Snapshot split whose questions are asked."})
    max_new_tokens: int = field(default=96, metadata={
        "help": "New-token budget of every answer (the same for every model)."})
    limit: int | None = field(default=None, metadata={
        "help": "Ask only the first N questions of the split (default: all)."})
    batch_size: int = field(default=8, metadata={
        "help": "Questions answered together in one left-padded batch."})
    include_base: bool = field(default=True, metadata={
        "help": "Also answer with the base alone, the row every adapter is measured against."})
    keep_examples: int = field(default=5, metadata={
        "help": "Answers stored per model for side-by-side reading."})
    encoder: str | None = field(default=None, metadata={
        "help": "sentence-transformers directory for answer similarity (default: the bundled "
                "MiniLM)."})

    def __post_init__(self) -> None:
        problems = [
            (self.max_new_tokens < 1, f"max new tokens must be at least 1, got "
                                      f"{self.max_new_tokens}"),
            (self.limit is not None and self.limit < 1, f"limit must be at least 1, got "
                                                        f"{self.limit}"),
            (self.batch_size < 1, f"batch size must be at least 1, got {self.batch_size}"),
            (self.keep_examples < 0, f"kept examples must be 0 or more, got "
                                     f"{self.keep_examples}"),
            (self.split not in ("test", "validation", "train"),
             f"split must be test, validation or train, got {self.split!r}"),
        ]
        for bad, message in problems:
            if bad:
                raise TrainerError(message)
