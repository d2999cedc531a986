"""(IA)^3 on LoRAForge's shared SFT path: only the adapter config differs from LoRA."""

from __future__ import annotations

from dataclasses import dataclass, field

from trainers.backends.sft import SftBackend
from trainers.config import TrainConfig

# Llama-style names: keys and values are rescaled in attention, the MLP's down projection's
# input is rescaled too (the "feedforward" modules must be a subset of the targets).
DEFAULT_TARGETS = ["k_proj", "v_proj", "down_proj"]


@dataclass
class Ia3Config(TrainConfig):
    """(IA)^3 learns a vector per target layer; it wants a higher learning rate than LoRA."""

    learning_rate: float = field(
        default=1e-2, metadata={"help": "Peak learning rate; (IA)^3 vectors want ~1e-2."})
    target_modules: list[str] = field(
        default_factory=lambda: list(DEFAULT_TARGETS),
        metadata={"help": "Layers whose activations are rescaled."})
    feedforward_modules: list[str] = field(
        default_factory=lambda: ["down_proj"],
        metadata={"help": "Targets whose *input* is rescaled (a subset of target_modules)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not set(self.feedforward_modules) <= set(self.target_modules):
            raise ValueError("feedforward_modules must be a subset of target_modules")


class Ia3Backend(SftBackend):
    """(IA)^3: infused adapters that rescale keys, values and feed-forward inputs."""

    name = "ia3"
    config_class = Ia3Config

    def peft_config(self, config: Ia3Config):
        from peft import IA3Config

        return IA3Config(target_modules=config.target_modules,
                         feedforward_modules=config.feedforward_modules, task_type="CAUSAL_LM")
