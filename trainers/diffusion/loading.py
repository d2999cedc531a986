"""Loading a masked-diffusion base and answering a chat with it.

LLaDA-style models ship their own modeling code, so they load through ``AutoModel`` with
``trust_remote_code=True``; registering a base as a masked-diffusion LM is the user's consent
to run that code. Weights still load from safetensors only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from trainers.diffusion.sampler import SamplerConfig, diffusion_generate
from trainers.errors import TrainerError

LLADA_MASK_TOKEN_ID = 126336  # LLaDA-8B's <|mdm_mask|>, for checkpoints whose config omits it


def load_diffusion_model(model_path: str, dtype: torch.dtype = torch.float32, **extra: Any):
    from transformers import AutoModel

    return AutoModel.from_pretrained(model_path, dtype=dtype, trust_remote_code=True,
                                     use_safetensors=True, **extra)


def load_diffusion_config(model_path: str):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(model_path, trust_remote_code=True)


def mask_token_id_of(model_config: Any, tokenizer: Any = None) -> int:
    """The mask token: the config's ``mask_token_id``, else the tokenizer's, else LLaDA's."""
    found = getattr(model_config, "mask_token_id", None)
    if found is None and tokenizer is not None:
        found = tokenizer.mask_token_id
    if found is None and "llada" in str(getattr(model_config, "model_type", "")).lower():
        found = LLADA_MASK_TOKEN_ID
    if found is None:
        raise TrainerError("this model has no mask token (no mask_token_id in its config or "
                           "tokenizer), so it is not a masked-diffusion LM; train it with "
                           "'lora' instead, or set mask_token_id in its config.json")
    return int(found)


def diffusion_answer(
    model,
    tokenizer,
    messages: list[dict],
    sampler: SamplerConfig,
    *,
    on_prefix: Callable[[list[int]], None] | None = None,
    generator: torch.Generator | None = None,
) -> str:
    """The assistant's next turn to ``messages``, sampled by denoising (see ``answer_ids``)."""
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)["input_ids"]
    return answer_ids(model, tokenizer, prompt.to(model.device), sampler, on_prefix=on_prefix,
                      generator=generator)


def answer_ids(
    model,
    tokenizer,
    prompt: torch.Tensor,
    sampler: SamplerConfig,
    *,
    on_prefix: Callable[[list[int]], None] | None = None,
    generator: torch.Generator | None = None,
) -> str:
    """The answer to a prompt of token ids, up to the first end-of-sequence token.

    During sampling, the tokens before the first position still masked are final (the sampler
    never remasks a committed token), so ``on_prefix`` gets that growing prefix of token ids
    after every step: a stream.
    """
    mask_id = mask_token_id_of(model.config, tokenizer)
    stops = {tokenizer.eos_token_id, tokenizer.pad_token_id} - {None}

    def decided(sequence: torch.Tensor) -> list[int]:
        ids = []
        for token in sequence[0, prompt.shape[1]:].tolist():
            if token == mask_id or token in stops:
                break
            ids.append(token)
        return ids

    callback = None
    if on_prefix is not None:
        def callback(sequence: torch.Tensor, block: int, step: int) -> None:
            on_prefix(decided(sequence))

    output = diffusion_generate(model, prompt, mask_id, sampler, on_step=callback,
                                generator=generator)
    return tokenizer.decode(decided(output), skip_special_tokens=True).strip()
