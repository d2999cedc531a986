"""QLoRA (Dettmers et al., 2023): LoRA on a base quantized to 4-bit NF4 with bitsandbytes.

The CPU trap (bitsandbytes 0.50): on CPUs with AVX512-BF16, the first forward of a
``Linear4bit`` in eval mode without gradients repacks its weight into an inference-only layout.
Training forwards after that go through ``gemv_4bit``, which has no autograd kernel, so the
gradient stops at every quantized layer and the LoRA weights below it silently stop learning.
Evaluation and answer scoring both run such forwards. We switch the repack off at load time and,
in case a future bitsandbytes repacks by another route, ``RepackGuard`` undoes any repack after
each evaluation and before each training step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from trainers import distributed
from trainers.backends.sft import SftBackend
from trainers.config import QloraConfig
from trainers.errors import TrainerError


def _linear4bit_layers(model) -> list:
    import bitsandbytes as bnb

    return [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]


def disable_cpu_repack(model) -> int:
    """Keep every 4-bit layer in the trainable layout; returns how many layers were touched."""
    layers = _linear4bit_layers(model)
    for layer in layers:
        layer.support_avx512bf16_for_cpu = False
    return len(layers)


def undo_cpu_repack(model) -> int:
    """Convert repacked 4-bit weights back to the trainable layout; returns how many were."""
    from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse

    undone = 0
    for layer in _linear4bit_layers(model):
        state = layer.weight.quant_state
        if getattr(state, "packing_format_for_cpu", False):
            layer.weight.data, layer.weight.quant_state = _convert_weight_packed_for_cpu_inverse(
                layer.weight.data, state)
            undone += 1
    return undone


class RepackGuard(TrainerCallback):
    """Undo a CPU repack before training continues; counts how often it had to."""

    def __init__(self) -> None:
        self.repairs = 0

    def _check(self, model) -> None:
        if model is not None:
            self.repairs += undo_cpu_repack(model)

    def on_evaluate(self, args, state, control, model=None, **kwargs) -> None:
        self._check(model)

    def on_step_begin(self, args, state, control, model=None, **kwargs) -> None:
        self._check(model)


def check_4bit_runs(device: str) -> None:
    """Quantize and multiply one small matrix; a clear error where 4-bit can't run here."""
    try:
        import bitsandbytes as bnb

        layer = bnb.nn.Linear4bit(64, 64, bias=False, quant_type="nf4",
                                  compute_dtype=torch.float32).to(device)
        layer.support_avx512bf16_for_cpu = False
        x = torch.randn(2, 64, device=device, requires_grad=True)
        layer(x).sum().backward()
    except Exception as exc:  # bitsandbytes raises many types for missing kernels
        raise TrainerError(f"4-bit quantization cannot run on {device} here "
                           f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
                           "; use --method lora, or a GPU with bitsandbytes' CUDA kernels") from exc


class QloraBackend(SftBackend):
    """Quantize the base to 4 bits, prepare it for k-bit training, then the usual LoRA path."""

    name = "qlora"
    config_class = QloraConfig

    def __init__(self) -> None:
        self.guard = RepackGuard()

    def preflight(self, model_path: str, config: Any) -> None:
        from core.device import resolve_device

        super().preflight(model_path, config)
        check_4bit_runs(resolve_device())

    def load_model(self, model_path: str, config: QloraConfig, device: str):
        from transformers import AutoModelForCausalLM, BitsAndBytesConfig

        compute = torch.bfloat16 if device.startswith("cuda") and torch.cuda.is_bf16_supported() \
            else torch.float32
        quantization = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type=config.quant_type,
            bnb_4bit_use_double_quant=config.double_quant, bnb_4bit_compute_dtype=compute,
        )
        model = AutoModelForCausalLM.from_pretrained(
            model_path, quantization_config=quantization, dtype=compute,
            # each process of a launch on its own GPU, never all on GPU 0
            device_map={"": f"cuda:{distributed.current().local_rank}"
                        if device.startswith("cuda") else "cpu"},
        )
        if disable_cpu_repack(model) == 0:
            raise TrainerError(f"no layer of {model_path} was quantized to 4 bits; "
                               "use --method lora for this model")
        return model

    def wrap_model(self, model, config: QloraConfig, workspace: Path):
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=config.gradient_checkpointing)
        return super().wrap_model(model, config, workspace)

    def callbacks(self, config: Any) -> list:
        self.guard = RepackGuard()
        return [self.guard]

    def save(self, model, tokenizer, output_dir: Path, workspace: Path) -> dict[str, Any]:
        extra = super().save(model, tokenizer, output_dir, workspace)
        extra["qlora_repack_repairs"] = self.guard.repairs
        return extra
