"""DoRA (Liu et al., 2024): LoRA's update split into a direction and a learned magnitude."""

from __future__ import annotations

from trainers.backends.sft import SftBackend
from trainers.config import LoraTrainConfig


class DoraBackend(SftBackend):
    """LoRA with PEFT's ``use_dora``; the adapter loads with plain ``PeftModel.from_pretrained``."""

    name = "dora"
    config_class = LoraTrainConfig

    def peft_config(self, config: LoraTrainConfig):
        lora = super().peft_config(config)
        lora.use_dora = True
        return lora
