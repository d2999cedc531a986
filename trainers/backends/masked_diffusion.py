"""LoRA, LoRA+ or PiSSA on a masked-diffusion LM (LLaDA-style), with LLaDA's SFT objective.

The diffusion part is an objective, not a new training loop: the shared SFT path runs with a
Trainer whose loss masks the answer (never the prompt) at a random ratio and predicts it, and
with LLaDA's sampler answering the test questions. The adapter part is borrowed whole from the
LoRA, LoRA+ or PiSSA backend (``adapter`` in the config), so the three variants stay one
implementation each.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from trainers.backends.lora import LoraBackend
from trainers.backends.loraplus import LoraPlusBackend
from trainers.backends.pissa import PissaBackend
from trainers.backends.sft import SftBackend, _dtype
from trainers.config import MaskedDiffusionConfig
from trainers.diffusion.loading import (
    diffusion_answer,
    load_diffusion_config,
    load_diffusion_model,
    mask_token_id_of,
)
from trainers.diffusion.objective import mask_tokens, sft_batch, sft_loss
from trainers.diffusion.sampler import SamplerConfig
from trainers.errors import TrainerError
from trainers.metrics import score_answers

ADAPTER_RECIPES: dict[str, type[SftBackend]] = {
    "lora": LoraBackend, "loraplus": LoraPlusBackend, "pissa": PissaBackend,
}
EVAL_SEED = 1234  # evaluation draws the same masks every time, so eval losses compare


def masked_diffusion_trainer(mask_token_id: int, epsilon: float, **kwargs: Any):
    """TRL's SFTTrainer with LLaDA's SFT loss in place of next-token cross-entropy."""
    from trl import SFTTrainer

    class MaskedDiffusionTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            ids, answer, lengths = sft_batch(inputs["input_ids"], inputs["labels"],
                                             inputs["attention_mask"],
                                             self.processing_class.eos_token_id)
            generator = None if model.training else torch.Generator().manual_seed(EVAL_SEED)
            noisy, masked, p = mask_tokens(ids, answer, mask_token_id, epsilon, generator)
            outputs = model(input_ids=noisy)
            loss = sft_loss(outputs.logits, ids, masked, p, lengths)
            return (loss, outputs) if return_outputs else loss

    return MaskedDiffusionTrainer(**kwargs)


class MaskedDiffusionBackend(SftBackend):
    """Adapters for LLaDA-style bases, loaded from a local path with ``trust_remote_code``."""

    name = "masked-diffusion"
    config_class = MaskedDiffusionConfig
    base_kind = "masked_diffusion"
    # A diffusion LM is not a causal LM: PEFT's plain model passes inputs through untouched.
    peft_task_type = None

    def _recipe(self, config: MaskedDiffusionConfig) -> SftBackend:
        recipe = ADAPTER_RECIPES[config.adapter]()
        recipe.peft_task_type = self.peft_task_type
        recipe.load_base = self.load_base  # PiSSA reloads the untouched base to check itself
        return recipe

    def preflight(self, model_path: str, config: MaskedDiffusionConfig) -> None:
        try:
            model_config = load_diffusion_config(model_path)
            tokenizer = self.load_tokenizer(model_path)
        except (OSError, ValueError) as exc:
            raise TrainerError(f"cannot load a masked-diffusion model from {model_path!r} "
                               f"({str(exc).splitlines()[0]})") from exc
        mask_token_id_of(model_config, tokenizer)
        super().preflight(model_path, config)

    def module_names(self, model_path: str) -> list[str]:
        from accelerate import init_empty_weights
        from transformers import AutoModel

        with init_empty_weights():
            model = AutoModel.from_config(load_diffusion_config(model_path),
                                          trust_remote_code=True)
        return [name for name, _ in model.named_modules() if name]

    def load_base(self, model_path: str, **kwargs: Any):
        return load_diffusion_model(model_path, **kwargs)

    def load_model(self, model_path: str, config: Any, device: str):
        from transformers import GenerationConfig

        model = self.load_base(model_path, dtype=_dtype(device))
        if getattr(model, "generation_config", None) is None:
            # TRL writes the pad token into it; a diffusion LM without generate() has none.
            model.generation_config = GenerationConfig()
        return model

    def load_tokenizer(self, model_path: str):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(model_path, trust_remote_code=True)

    def use_padding_free(self, config: Any, device: str) -> bool:
        return False  # bidirectional attention would let packed examples see each other

    def peft_config(self, config: MaskedDiffusionConfig):
        return self._recipe(config).peft_config(config)

    def wrap_model(self, model, config: MaskedDiffusionConfig, workspace: Path):
        # save() receives no config, so the recipe that wraps the model is the one that saves it.
        self._wrapping = (config.adapter, self._recipe(config))
        return self._wrapping[1].wrap_model(model, config, workspace)

    def create_optimizer(self, model, config: MaskedDiffusionConfig):
        return self._recipe(config).create_optimizer(model, config)

    def make_trainer(self, config: MaskedDiffusionConfig, tokenizer, **kwargs: Any):
        mask_id = mask_token_id_of(kwargs["model"].config, tokenizer)
        return masked_diffusion_trainer(mask_id, config.mask_epsilon,
                                        processing_class=tokenizer, **kwargs)

    def score(self, model, tokenizer, chats, config: MaskedDiffusionConfig) -> dict[str, Any]:
        def answer(model, tokenizer, messages, max_new_tokens: int) -> str:
            sampler = SamplerConfig.for_length(max_new_tokens, config.block_length)
            return diffusion_answer(model, tokenizer, messages, sampler)

        return score_answers(model, tokenizer, chats, max_new_tokens=config.max_new_tokens,
                             answer=answer)

    def save(self, model, tokenizer, output_dir: Path, workspace: Path) -> dict[str, Any]:
        name, recipe = self._wrapping
        extra = recipe.save(model, tokenizer, output_dir, workspace)
        return {"objective": "masked_diffusion", "adapter_recipe": name, **extra}
