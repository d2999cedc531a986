"""Full fine-tuning: every weight trains; the baseline the adapters' savings are measured by."""

from __future__ import annotations

from typing import Any

from trainers.backends.sft import SftBackend
from trainers.config import FullTrainConfig


class FullBackend(SftBackend):
    """The shared SFT path with no adapter; saves a complete transformers model."""

    name = "full"
    config_class = FullTrainConfig

    def peft_config(self, config: Any) -> None:
        return None

    def wrap_model(self, model, config: Any, workspace):
        if config.gradient_checkpointing:
            model.config.use_cache = False
        return model
