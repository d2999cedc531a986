"""PiSSA (Meng et al., 2024): LoRA initialised from each weight's principal singular vectors.

PiSSA moves the principal part of every adapted weight into the adapter, so the trained adapter
only fits the *residual* base. ``save`` converts it (PEFT's
``path_initial_model_for_weight_conversion``) into a rank-2r LoRA that loads on the untouched
base, checks on a probe input that both give the same logits, and records the difference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from trainers.backends.sft import SftBackend
from trainers.config import PissaConfig
from trainers.errors import TrainerError

INIT_DIR = "pissa-init"
MAX_LOGIT_DIFF = 1e-3


class PissaBackend(SftBackend):
    name = "pissa"
    config_class = PissaConfig

    def peft_config(self, config: PissaConfig):
        lora = super().peft_config(config)
        lora.init_lora_weights = f"pissa_niter_{config.pissa_niter}" if config.pissa_niter \
            else "pissa"
        return lora

    def wrap_model(self, model, config: PissaConfig, workspace: Path):
        peft_model = super().wrap_model(model, config, workspace)
        init_dir = workspace / INIT_DIR
        if not (init_dir / "adapter_config.json").is_file():  # a resumed run keeps the first one
            original = peft_model.peft_config["default"].init_lora_weights
            peft_model.peft_config["default"].init_lora_weights = True  # PEFT's documented recipe
            peft_model.save_pretrained(init_dir)
            peft_model.peft_config["default"].init_lora_weights = original
        return peft_model

    def save(self, model, tokenizer, output_dir: Path, workspace: Path) -> dict[str, Any]:
        from peft import PeftModel

        model.save_pretrained(output_dir,
                              path_initial_model_for_weight_conversion=str(workspace / INIT_DIR))
        tokenizer.save_pretrained(output_dir)
        probe = torch.tensor([[tokenizer.bos_token_id or 0, *range(5, 21)]])
        base_path = model.peft_config["default"].base_model_name_or_path
        model.eval()
        with torch.no_grad():
            trained = model(input_ids=probe).logits.float()
            untouched = self.load_base(base_path, dtype=model.dtype)
            converted = PeftModel.from_pretrained(untouched, output_dir).eval()
            loaded = converted(input_ids=probe).logits.float()
        diff = float((trained - loaded).abs().max())
        if diff > MAX_LOGIT_DIFF * max(1.0, float(trained.abs().max())):
            raise TrainerError(f"the converted PiSSA adapter does not reproduce the trained model "
                               f"on the untouched base (max logit difference {diff:.2e}); "
                               "report this with the run's config")
        return {"pissa_conversion_max_logit_diff": diff}
