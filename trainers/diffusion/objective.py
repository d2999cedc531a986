"""LLaDA's training objective: mask tokens with a random ratio, predict them, weight by 1/p.

Pretraining masks every token; supervised fine-tuning never masks the prompt, and treats the
EOS padding after an answer as part of the answer, so the model learns where answers end
(Nie et al., 2025, "Large Language Diffusion Models", Appendix B).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

EPSILON = 1e-3


def mask_ratios(batch_size: int, epsilon: float = EPSILON,
                generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """p = (1 − ε)·t + ε with t ~ U(0, 1), one per sample: ε keeps every p above zero."""
    t = torch.rand(batch_size, generator=generator, device=device)
    return (1 - epsilon) * t + epsilon


def mask_tokens(input_ids: torch.Tensor, maskable: torch.Tensor, mask_token_id: int,
                epsilon: float = EPSILON, generator: torch.Generator | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The noisy batch, which positions were masked, and each position's masking probability.

    Only ``maskable`` positions can be masked, each independently with its sample's p.
    """
    batch, length = input_ids.shape
    p = mask_ratios(batch, epsilon, generator).to(input_ids.device)[:, None].expand(batch, length)
    draws = torch.rand(batch, length, generator=generator).to(input_ids.device)
    masked = (draws < p) & maskable
    noisy = torch.where(masked, torch.full_like(input_ids, mask_token_id), input_ids)
    return noisy, masked, p


def sft_loss(logits: torch.Tensor, targets: torch.Tensor, masked: torch.Tensor,
             p: torch.Tensor, answer_lengths: torch.Tensor) -> torch.Tensor:
    """Σ over masked positions of CE / p, divided by each sample's answer length, batch mean."""
    token_loss = F.cross_entropy(logits[masked].float(), targets[masked], reduction="none")
    weights = p[masked] * answer_lengths[:, None].expand_as(masked)[masked]
    return (token_loss / weights).sum() / targets.shape[0]


def pretrain_loss(model, input_ids: torch.Tensor, mask_token_id: int,
                  epsilon: float = EPSILON, generator: torch.Generator | None = None,
                  ) -> torch.Tensor:
    """LLaDA's pretraining loss on a batch of windows: every token may be masked."""
    noisy, masked, p = mask_tokens(input_ids, torch.ones_like(input_ids, dtype=torch.bool),
                                   mask_token_id, epsilon, generator)
    logits = model(input_ids=noisy).logits
    token_loss = F.cross_entropy(logits[masked].float(), input_ids[masked], reduction="none")
    return (token_loss / p[masked]).sum() / input_ids.numel()


def sft_batch(input_ids: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor,
              eos_token_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A TRL prompt/completion batch in LLaDA's SFT form: (ids, answer positions, answer lengths).

    TRL pads on the right and labels the prompt and the padding -100. LLaDA pads answers with
    EOS and trains on that padding too, so padding becomes EOS and joins the answer.
    """
    padding = attention_mask == 0
    ids = torch.where(padding, torch.full_like(input_ids, eos_token_id), input_ids)
    answer = (labels != -100) | padding
    return ids, answer, answer.sum(dim=1).clamp(min=1)
