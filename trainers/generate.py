"""Greedy answers from a chat model; shared by the evaluation code and the UI."""

from __future__ import annotations

import torch


@torch.no_grad()
def generate_answer(model, tokenizer, messages: list[dict], max_new_tokens: int = 128) -> str:
    """The assistant's next turn for ``messages``, decoded greedily through the chat template."""
    inputs = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    inputs = {k: v.to(model.device) for k, v in inputs.items()}
    output = model.generate(
        **inputs,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None
        else tokenizer.eos_token_id,
    )
    new_tokens = output[0, inputs["input_ids"].shape[1]:]
    return tokenizer.decode(new_tokens, skip_special_tokens=True).strip()
