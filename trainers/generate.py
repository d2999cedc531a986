"""The autoregressive generation path of evaluation and the trainer's quick check. The serving
engine decodes its batches step by step (serving/decoding.py), and a test checks that its greedy
replies equal these, so a reply in the chat app equals the evaluated one."""

from __future__ import annotations

from typing import Any

import torch


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
