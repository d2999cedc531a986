"""LLaDA's sampler: start from all-mask, unmask the most confident predictions step by step.

The answer is cut into blocks filled left to right (semi-autoregressive when a block is shorter
than the answer); inside a block each step commits the ``k`` most confident predictions and
leaves the rest masked ("low-confidence remasking"). Temperature adds Gumbel noise to the
logits; classifier-free guidance contrasts the logits with those of a prompt-less input.
Follows ``generate.py`` of the LLaDA reference code (Nie et al., 2025).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F


@dataclass
class SamplerConfig:
    """How to sample an answer from a masked-diffusion LM."""

    gen_length: int = field(default=64, metadata={
        "help": "Answer length in tokens (masks to fill)."})
    steps: int = field(default=64, metadata={
        "help": "Denoising steps in all; gen_length steps commit one token each (best quality)."})
    block_length: int = field(default=32, metadata={
        "help": "Tokens per block; blocks are filled left to right. Equal to gen_length: one "
                "block, fully parallel."})
    temperature: float = field(default=0.0, metadata={
        "help": "Gumbel noise on the logits; 0 picks the most likely token."})
    cfg_scale: float = field(default=0.0, metadata={
        "help": "Classifier-free guidance strength; 0 turns it off (costs a second forward)."})
    remasking: Literal["low_confidence", "random"] = field(default="low_confidence", metadata={
        "help": "Which predictions to commit each step: the most confident, or random ones."})

    def __post_init__(self) -> None:
        checks = [
            (self.gen_length >= 1, f"gen_length must be at least 1, got {self.gen_length}"),
            (self.block_length >= 1, f"block_length must be at least 1, got {self.block_length}"),
            (self.gen_length % self.block_length == 0,
             f"gen_length ({self.gen_length}) must be a multiple of block_length "
             f"({self.block_length})"),
            (self.steps >= 1 and self.steps % (self.gen_length // max(self.block_length, 1)) == 0,
             f"steps ({self.steps}) must be a positive multiple of the number of blocks "
             f"({self.gen_length // max(self.block_length, 1)})"),
            (self.temperature >= 0, f"temperature must be 0 or more, got {self.temperature}"),
            (self.cfg_scale >= 0, f"cfg_scale must be 0 or more, got {self.cfg_scale}"),
            (self.remasking in ("low_confidence", "random"),
             f"remasking must be 'low_confidence' or 'random', got {self.remasking!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @classmethod
    def for_length(cls, max_new_tokens: int, block_length: int = 32, **kwargs) -> SamplerConfig:
        """A valid config for ``max_new_tokens`` rounded up to whole blocks, one token a step."""
        block = min(block_length, max_new_tokens)
        length = -(-max_new_tokens // block) * block
        return cls(gen_length=length, steps=length, block_length=block, **kwargs)


def add_gumbel_noise(logits: torch.Tensor, temperature: float,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Logits perturbed so argmax samples at ``temperature``; float64, as low precision
    Gumbel noise degrades the samples (LLaDA's note)."""
    if temperature == 0:
        return logits
    logits = logits.to(torch.float64)
    noise = torch.rand(logits.shape, generator=generator, dtype=torch.float64).to(logits.device)
    gumbel = (-torch.log(noise)) ** temperature
    return logits.exp() / gumbel


def tokens_per_step(masked: torch.Tensor, steps: int) -> torch.Tensor:
    """Masks to commit at each step so that ``steps`` steps fill them all: (batch, steps)."""
    count = masked.sum(dim=1, keepdim=True)
    base, remainder = count // steps, count % steps
    schedule = base.expand(-1, steps).clone()
    for row in range(masked.shape[0]):
        schedule[row, : int(remainder[row])] += 1
    return schedule


StepCallback = Callable[[torch.Tensor, int, int], None]  # (sequence, block index, step in block)


@torch.no_grad()
def diffusion_generate(
    model,
    prompt_ids: torch.Tensor,
    mask_token_id: int,
    config: SamplerConfig | None = None,
    *,
    on_step: StepCallback | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Prompt followed by ``gen_length`` sampled tokens, shape (batch, prompt + gen_length)."""
    config = config or SamplerConfig()
    prompt_length = prompt_ids.shape[1]
    x = torch.full((prompt_ids.shape[0], prompt_length + config.gen_length), mask_token_id,
                   dtype=torch.long, device=prompt_ids.device)
    x[:, :prompt_length] = prompt_ids
    is_prompt = x != mask_token_id
    blocks = config.gen_length // config.block_length
    steps_per_block = config.steps // blocks
    for block in range(blocks):
        start = prompt_length + block * config.block_length
        end = start + config.block_length
        schedule = tokens_per_step(x[:, start:end] == mask_token_id, steps_per_block)
        for step in range(steps_per_block):
            masked = x == mask_token_id
            logits = _guided_logits(model, x, is_prompt, mask_token_id, config.cfg_scale)
            # Committing a predicted mask token would leave a hole no later step fills.
            logits[..., mask_token_id] = -torch.inf
            predicted = add_gumbel_noise(logits, config.temperature, generator).argmax(dim=-1)
            if config.remasking == "low_confidence":
                confidence = F.softmax(logits.float(), dim=-1).gather(
                    -1, predicted[..., None]).squeeze(-1)
            else:
                confidence = torch.rand(predicted.shape, generator=generator).to(x.device)
            confidence[:, end:] = -torch.inf  # later blocks wait their turn
            confidence = torch.where(masked, confidence, -torch.inf)
            commit = torch.zeros_like(masked)
            for row in range(x.shape[0]):
                chosen = torch.topk(confidence[row], k=int(schedule[row, step])).indices
                commit[row, chosen] = True
            x = torch.where(commit, predicted, x)
            if on_step is not None:
                on_step(x, block, step)
    return x


def _guided_logits(model, x: torch.Tensor, is_prompt: torch.Tensor, mask_token_id: int,
                   cfg_scale: float) -> torch.Tensor:
    if cfg_scale <= 0:
        return model(input_ids=x).logits
    unconditional = x.masked_fill(is_prompt, mask_token_id)
    both = model(input_ids=torch.cat([x, unconditional])).logits
    conditional, free = both.chunk(2)
    return free + (cfg_scale + 1) * (conditional - free)
