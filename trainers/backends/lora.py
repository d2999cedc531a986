"""LoRA (Hu et al., 2021), with rsLoRA's rank-stable scaling as the ``use_rslora`` option."""

from __future__ import annotations

from trainers.backends.sft import SftBackend
from trainers.config import LoraTrainConfig


class LoraBackend(SftBackend):
    """Low-rank adapters on a frozen base: the shared SFT path with its default hooks."""

    name = "lora"
    config_class = LoraTrainConfig
