"""The one autoregressive generation path: evaluation, the trainer's quick check and the serving
engine all decode through here, so a reply in the chat app equals the evaluated one."""

from __future__ import annotations

from typing import Any

import torch
from transformers import StoppingCriteriaList


def pad_id(tokenizer) -> int | None:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None \
        else tokenizer.eos_token_id


@torch.inference_mode()
def generate_ids(model, tokenizer, input_ids: torch.Tensor, max_new_tokens: int, *,
                 temperature: float = 0.0, top_p: float = 1.0, streamer: Any = None
                 ) -> torch.Tensor:
    """The new token ids after ``input_ids`` (one prompt): greedy at temperature 0, else
    sampled with top-p. A ``streamer`` (transformers' protocol) receives tokens as they come."""
    output = model.generate(
        input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
        max_new_tokens=max_new_tokens, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=pad_id(tokenizer), streamer=streamer, **_sampling(temperature, top_p),
    )
    return output[0, input_ids.shape[1]:]


@torch.inference_mode()
def generate_batch(model, tokenizer, prompts: list[list[int]], max_new_tokens: int, *,
                   temperature: float = 0.0, top_p: float = 1.0, streamer: Any = None,
                   stopping_criteria: Any = None, adapter_names: list[str] | None = None,
                   device: Any = "cpu") -> torch.Tensor:
    """New token ids for several prompts at once, left-padded so every row's next token sits
    in the last column. With ``adapter_names`` (a PEFT model), row i decodes through adapter
    ``adapter_names[i]``, ``"__base__"`` meaning none; greedy rows equal their solo runs."""
    width = max(len(p) for p in prompts)
    padding = pad_id(tokenizer)
    input_ids = torch.tensor([[padding] * (width - len(p)) + p for p in prompts], device=device)
    attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts],
                             device=device)
    extra: dict[str, Any] = {} if adapter_names is None else {"adapter_names": adapter_names}
    if stopping_criteria is not None:
        extra["stopping_criteria"] = StoppingCriteriaList([stopping_criteria])
    output = model.generate(
        input_ids=input_ids, attention_mask=attention, max_new_tokens=max_new_tokens,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=padding, streamer=streamer,
        **_sampling(temperature, top_p), **extra,
    )
    return output[:, width:]


def _sampling(temperature: float, top_p: float) -> dict[str, Any]:
    if temperature > 0:
        return {"do_sample": True, "temperature": temperature, "top_p": top_p}
    return {"do_sample": False}


def decode_answer(tokenizer, new_tokens: torch.Tensor) -> str:
    return tokenizer.decode(new_tokens, skip_special_tokens=True).strip()


def generate_answer(model, tokenizer, messages: list[dict], max_new_tokens: int = 128) -> str:
    """The assistant's next turn for ``messages``, decoded greedily through the chat template."""
    input_ids = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )["input_ids"].to(model.device)
    return decode_answer(tokenizer, generate_ids(model, tokenizer, input_ids, max_new_tokens))
