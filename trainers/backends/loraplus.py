"""LoRA+ (Hayou et al., 2024): not a new adapter, an optimizer giving B a larger learning rate."""

from __future__ import annotations

import torch

from trainers.backends.sft import SftBackend
from trainers.config import LoraPlusConfig


class LoraPlusBackend(SftBackend):
    """The LoRA path with PEFT's ``create_loraplus_optimizer`` in place of plain AdamW."""

    name = "loraplus"
    config_class = LoraPlusConfig

    def create_optimizer(self, model, config: LoraPlusConfig) -> torch.optim.Optimizer:
        from peft.optimizers import create_loraplus_optimizer

        return create_loraplus_optimizer(
            model=model, optimizer_cls=torch.optim.AdamW, lr=config.learning_rate,
            loraplus_lr_ratio=config.loraplus_lr_ratio, weight_decay=0.0,
        )
