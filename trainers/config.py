"""Training configs: dataclasses whose field help is the CLI's help and whose dict is recorded.

``TrainConfig`` holds what every backend shares (schedule, batching, evaluation, checkpoints);
each variant adds only its own knobs, the way PEFT's configs do.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

REPORT_TO = ("none", "tensorboard", "wandb")


def _check(checks: list[tuple[bool, str]]) -> None:
    for ok, message in checks:
        if not ok:
            raise ValueError(message)


@dataclass
class TrainConfig:
    """The training loop's settings, shared by every backend."""

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
    padding_free: bool | None = field(
        default=None,
        metadata={"help": "Concatenate each batch's examples instead of padding them. Default: "
                          "on CUDA only; on CPU (no FlashAttention) the concatenated batch's "
                          "attention mask costs more than the padding it saves, so batches are "
                          "grouped by length instead."},
    )
    gradient_checkpointing: bool = field(
        default=False,
        metadata={"help": "Recompute activations to save memory; ~30% slower on CPU, worth it "
                          "on big models."},
    )
    low_memory: bool = field(
        default=False,
        metadata={"help": "Lower the peak memory at some cost in speed: gradient checkpointing, "
                          "memory freed during a step goes back to the OS at once (Linux, "
                          "glibc), and on CPU the LM head is scored in small tiles. On SmolLM2 "
                          "with LoRA on CPU: half the peak; each step takes about 25% longer."},
    )
    eval_steps: int | None = field(
        default=None,
        metadata={"help": "Evaluate on the test split every N steps [default: only at the end]."},
    )
    early_stopping_patience: int | None = field(
        default=None,
        metadata={"help": "Stop after this many evaluations without a better eval loss and keep "
                          "the best checkpoint (needs eval_steps) [default: off]."},
    )
    save_steps: int = field(
        default=50,
        metadata={"help": "Write a resumable checkpoint every N steps (0: never)."},
    )
    generate_examples: int = field(
        default=8,
        metadata={"help": "Test questions to answer after training for ROUGE-L and exact match "
                          "(0: skip)."},
    )
    max_new_tokens: int = field(
        default=64, metadata={"help": "Longest generated answer when scoring the test split."}
    )
    report_to: Literal["none", "tensorboard", "wandb"] = field(
        default="none", metadata={"help": "Also log to TensorBoard or Weights & Biases."}
    )
    progress_bar: bool = field(default=True, metadata={"help": "Show a progress bar."})
    seed: int = field(default=0, metadata={"help": "Seed for the adapter init and data order."})

    def __post_init__(self) -> None:
        if self.low_memory:  # recorded as what ran
            self.gradient_checkpointing = True
        _check([
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
            (self.eval_steps is None or self.eval_steps >= 1,
             f"eval steps must be at least 1, got {self.eval_steps}"),
            (self.early_stopping_patience is None or self.early_stopping_patience >= 1,
             f"early stopping patience must be at least 1, got {self.early_stopping_patience}"),
            (self.early_stopping_patience is None or self.eval_steps is not None,
             "early stopping needs eval_steps: set both"),
            (self.save_steps >= 0, f"save steps must be 0 or more, got {self.save_steps}"),
            (self.generate_examples >= 0,
             f"generate examples must be 0 or more, got {self.generate_examples}"),
            (self.max_new_tokens >= 1,
             f"max new tokens must be at least 1, got {self.max_new_tokens}"),
            (self.report_to in REPORT_TO,
             f"report_to must be one of {', '.join(REPORT_TO)}, got {self.report_to!r}"),
        ])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LoraTrainConfig(TrainConfig):
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
    use_rslora: bool = field(
        default=False,
        metadata={"help": "rsLoRA: scale the update by alpha / sqrt(rank), which keeps high "
                          "ranks learning (Kalajdzievski, 2023)."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.target_modules, tuple):
            self.target_modules = list(self.target_modules)
        _check([
            (self.rank >= 1, f"rank must be at least 1, got {self.rank}"),
            (self.alpha > 0, f"alpha must be positive, got {self.alpha}"),
            (0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}"),
            (self.target_modules == "all-linear"
             or (isinstance(self.target_modules, list) and len(self.target_modules) > 0
                 and all(isinstance(m, str) and m for m in self.target_modules)),
             f"target modules must be 'all-linear' or a list of module names, "
             f"got {self.target_modules!r}"),
        ])


@dataclass
class LoraPlusConfig(LoraTrainConfig):
    """LoRA whose B matrices learn faster than its A matrices (Hayou et al., 2024)."""

    learning_rate: float = field(
        default=1e-3,
        metadata={"help": "Learning rate of the A matrices; B gets this times the ratio."},
    )
    loraplus_lr_ratio: float = field(
        default=16.0, metadata={"help": "Learning-rate ratio of B to A (the paper uses 16)."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        _check([(self.loraplus_lr_ratio >= 1,
                 f"loraplus lr ratio must be at least 1, got {self.loraplus_lr_ratio}")])


@dataclass
class PissaConfig(LoraTrainConfig):
    """LoRA initialised from the principal singular vectors of each weight (Meng et al., 2024)."""

    dropout: float = field(
        default=0.0, metadata={"help": "Dropout on the LoRA input; PiSSA's authors use 0."}
    )
    pissa_niter: int = field(
        default=4,
        metadata={"help": "Subspace iterations of the fast randomized SVD (0: exact SVD, slow "
                          "on big models)."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        _check([(self.pissa_niter >= 0, f"pissa niter must be 0 or more, got {self.pissa_niter}")])


@dataclass
class QloraConfig(LoraTrainConfig):
    """LoRA on a base quantized to 4 bits (Dettmers et al., 2023)."""

    quant_type: Literal["nf4", "fp4"] = field(
        default="nf4", metadata={"help": "4-bit data type: 'nf4' (QLoRA's) or 'fp4'."}
    )
    double_quant: bool = field(
        default=True, metadata={"help": "Quantize the quantization constants too (~0.4 bit/param)."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        _check([(self.quant_type in ("nf4", "fp4"),
                 f"quant type must be 'nf4' or 'fp4', got {self.quant_type!r}")])


@dataclass
class FullTrainConfig(TrainConfig):
    """Every weight trains: the baseline the adapters are measured against."""

    learning_rate: float = field(
        default=3e-4,
        metadata={"help": "Peak learning rate; full fine-tunes want ~10x less than LoRA."},
    )


@dataclass
class MaskedDiffusionConfig(LoraTrainConfig):
    """An adapter on a masked-diffusion LM (LLaDA-style), trained with LLaDA's SFT objective."""

    adapter: Literal["lora", "loraplus", "pissa"] = field(
        default="lora",
        metadata={"help": "Adapter recipe to compose with the diffusion objective: 'lora', "
                          "'loraplus' (B learns loraplus_lr_ratio times faster) or 'pissa' "
                          "(principal-singular-vector init)."},
    )
    loraplus_lr_ratio: float = field(
        default=16.0, metadata={"help": "With adapter=loraplus: learning-rate ratio of B to A."}
    )
    pissa_niter: int = field(
        default=4, metadata={"help": "With adapter=pissa: subspace iterations of the fast SVD "
                                     "(0: exact SVD)."}
    )
    mask_epsilon: float = field(
        default=1e-3,
        metadata={"help": "ε in the masking ratio p = (1 − ε)·t + ε, t ~ U(0, 1); keeps p > 0."},
    )
    block_length: int = field(
        default=32,
        metadata={"help": "Sampler block length when answering test questions after training."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        _check([
            (self.adapter in ("lora", "loraplus", "pissa"),
             f"adapter must be 'lora', 'loraplus' or 'pissa', got {self.adapter!r}"),
            (self.loraplus_lr_ratio >= 1,
             f"loraplus lr ratio must be at least 1, got {self.loraplus_lr_ratio}"),
            (self.pissa_niter >= 0, f"pissa niter must be 0 or more, got {self.pissa_niter}"),
            (0 < self.mask_epsilon < 1, f"mask epsilon must be in (0, 1), got {self.mask_epsilon}"),
            (self.block_length >= 1, f"block length must be at least 1, got {self.block_length}"),
            (not self.padding_free,
             "padding_free cannot be used with a masked-diffusion LM: its attention is "
             "bidirectional, so packed examples would see each other"),
        ])
