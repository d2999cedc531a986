"""QLoRA on CPU: 4-bit training keeps learning after every evaluation.

bitsandbytes 0.50 repacks a 4-bit weight on its first eval-mode, no-grad forward on CPUs with
AVX512-BF16; training forwards after that lose their gradient through the quantized layers.
"""

from __future__ import annotations

import pytest
import torch
from transformers import TrainerCallback

from trainers.backends.qlora import QloraBackend, check_4bit_runs, undo_cpu_repack
from trainers.testing import KIT_SETTINGS, make_tiny_model, write_chats


class LoraWatcher(TrainerCallback):
    """Snapshots LoRA weights at each evaluation, and LoRA gradients at each optimizer step."""

    def __init__(self) -> None:
        self.at_eval: list[dict[str, torch.Tensor]] = []
        self.grads_after_eval: list[int] = []  # LoRA tensors with a zero gradient, per step
        self.repacked_during_training = 0

    @staticmethod
    def _lora(model) -> dict[str, torch.nn.Parameter]:
        return {n: p for n, p in model.named_parameters() if "lora_" in n and p.requires_grad}

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        self.at_eval.append({n: p.detach().clone() for n, p in self._lora(model).items()})

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if self.at_eval:
            lora = self._lora(model)
            self.grads_after_eval.append(
                sum(1 for p in lora.values() if p.grad is None or not p.grad.any()))
        self.repacked_during_training += sum(
            1 for m in model.modules()
            if getattr(getattr(getattr(m, "weight", None), "quant_state", None),
                       "packing_format_for_cpu", False))


class WatchedQlora(QloraBackend):
    def __init__(self) -> None:
        super().__init__()
        self.watcher = LoraWatcher()

    def callbacks(self, config):
        return [*super().callbacks(config), self.watcher]


@pytest.mark.slow
def test_lora_weights_keep_learning_after_each_evaluation(tmp_path):
    check_4bit_runs("cpu")
    backend = WatchedQlora()
    model_path = make_tiny_model(tmp_path / "base")
    train, test = write_chats(tmp_path / "data")
    config = backend.config_class(**{**KIT_SETTINGS, "max_steps": 9, "eval_steps": 3,
                                     "generate_examples": 0})
    result = backend.train(model_path, train, test, tmp_path / "out", config)
    watcher = backend.watcher
    assert len(watcher.at_eval) >= 3  # evaluations at steps 3, 6, 9 (+ the final one)
    for before, after in zip(watcher.at_eval[:2], watcher.at_eval[1:3], strict=True):
        changed = [n for n in before if not torch.equal(before[n], after[n])]
        assert len(changed) == len(before), "some LoRA weights stopped learning"
    assert watcher.grads_after_eval and all(z == 0 for z in watcher.grads_after_eval), \
        watcher.grads_after_eval
    assert watcher.repacked_during_training == 0
    assert result.metrics["trainable_params"] > 0


def test_the_repack_guard_restores_the_trainable_layout():
    import bitsandbytes as bnb

    check_4bit_runs("cpu")
    layer = bnb.nn.Linear4bit(64, 64, bias=False, quant_type="nf4", compute_dtype=torch.float32)
    layer = layer.to("cpu")
    layer.eval()
    if not layer.support_avx512bf16_for_cpu:
        pytest.skip("this CPU has no AVX512-BF16, so bitsandbytes never repacks here")
    shape = tuple(layer.weight.shape)
    with torch.no_grad():
        layer(torch.randn(2, 64))
    assert layer.weight.quant_state.packing_format_for_cpu  # the trap is real on this CPU
    assert undo_cpu_repack(layer) == 1
    assert tuple(layer.weight.shape) == shape
    x = torch.randn(2, 64, requires_grad=True)
    layer(x).sum().backward()
    assert x.grad is not None and x.grad.any()  # gradients flow through the layer again
