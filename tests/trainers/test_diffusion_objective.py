"""LLaDA's objective and sampler on their own: what gets masked, what the loss is, how the
sampler fills an answer. A tiny random bidirectional model is enough for the sampler's
mechanics; learning is tested in test_masked_diffusion.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from trainers.diffusion.modeling_tiny_mdm import TinyMdmConfig, TinyMdmModelLM
from trainers.diffusion.objective import mask_tokens, sft_batch, sft_loss
from trainers.diffusion.sampler import SamplerConfig, diffusion_generate, tokens_per_step

MASK, EOS = 3, 1


def tiny_model(seed: int = 0) -> TinyMdmModelLM:
    torch.manual_seed(seed)
    config = TinyMdmConfig(mask_token_id=MASK, vocab_size=64, hidden_size=32,
                           intermediate_size=64, num_hidden_layers=2, num_attention_heads=1,
                           num_key_value_heads=1, head_dim=32)
    return TinyMdmModelLM(config).eval()


def trl_batch(prompt_lengths: list[int], answer_lengths: list[int]):
    """A right-padded batch labelled the way TRL's prompt/completion collator labels it."""
    width = max(p + a for p, a in zip(prompt_lengths, answer_lengths, strict=True))
    ids = torch.randint(10, 64, (len(prompt_lengths), width))
    labels = torch.full_like(ids, -100)
    attention = torch.zeros_like(ids)
    for row, (p, a) in enumerate(zip(prompt_lengths, answer_lengths, strict=True)):
        labels[row, p:p + a] = ids[row, p:p + a]
        attention[row, :p + a] = 1
        ids[row, p + a:] = 0  # the pad token
    return ids, labels, attention


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.tuples(st.integers(1, 20), st.integers(1, 20)), min_size=1, max_size=6),
       seed=st.integers(0, 10_000))
def test_masks_never_touch_prompt_tokens(rows, seed):
    prompts, answers = [r[0] for r in rows], [r[1] for r in rows]
    ids, labels, attention = trl_batch(prompts, answers)
    clean, answer, lengths = sft_batch(ids, labels, attention, EOS)
    generator = torch.Generator().manual_seed(seed)
    noisy, masked, p = mask_tokens(clean, answer, MASK, generator=generator)
    for row, prompt_length in enumerate(prompts):
        assert not masked[row, :prompt_length].any()
        assert torch.equal(noisy[row, :prompt_length], ids[row, :prompt_length])
        # Padding after the answer is EOS and counts as answer, as in LLaDA's SFT.
        assert (clean[row, prompt_length + answers[row]:] == EOS).all()
        assert int(lengths[row]) == clean.shape[1] - prompt_length
    assert torch.equal(noisy[masked], torch.full_like(noisy[masked], MASK))
    assert torch.equal(noisy[~masked], clean[~masked])
    assert ((p >= 1e-3) & (p <= 1)).all()


def test_answer_tokens_are_masked_at_the_sampled_ratio():
    ids, labels, attention = trl_batch([5] * 400, [200] * 400)
    clean, answer, _ = sft_batch(ids, labels, attention, EOS)
    _, masked, p = mask_tokens(clean, answer, MASK, generator=torch.Generator().manual_seed(0))
    observed = masked[:, 5:].float().mean(dim=1)
    assert (observed - p[:, 0]).abs().max() < 0.15  # 200 Bernoulli draws per row
    assert abs(float(p[:, 0].mean()) - 0.5) < 0.05  # t ~ U(0, 1)


def test_loss_is_the_inverse_probability_weighted_sum_over_masked_answer_tokens():
    torch.manual_seed(1)
    ids, labels, attention = trl_batch([4, 6, 3, 5, 2, 7], [5, 2, 9, 4, 6, 3])
    clean, answer, lengths = sft_batch(ids, labels, attention, EOS)
    noisy, masked, p = mask_tokens(clean, answer, MASK, generator=torch.Generator().manual_seed(3))
    logits = torch.randn(*clean.shape, 64)
    expected = 0.0
    for row in range(clean.shape[0]):
        for col in range(clean.shape[1]):
            if masked[row, col]:
                ce = F.cross_entropy(logits[row, col][None], clean[row, col][None])
                expected += float(ce) / float(p[row, col]) / int(lengths[row])
    expected /= clean.shape[0]
    assert masked.any()
    assert float(sft_loss(logits, clean, masked, p, lengths)) == pytest.approx(expected, rel=1e-5)


def test_attention_is_bidirectional():
    model = tiny_model()
    ids = torch.randint(10, 64, (1, 12))
    changed = ids.clone()
    changed[0, -1] = (changed[0, -1] + 1) % 64
    with torch.no_grad():
        first = model(input_ids=ids).logits[0, 0]
        again = model(input_ids=changed).logits[0, 0]
    assert not torch.allclose(first, again)  # the first position sees the last one


@pytest.mark.parametrize("cfg_scale", [0.0, 1.5])
@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_sampler_leaves_no_mask_and_fills_blocks_in_order(cfg_scale, temperature):
    model = tiny_model()
    prompt = torch.randint(10, 64, (2, 7))
    config = SamplerConfig(gen_length=24, steps=12, block_length=8, temperature=temperature,
                           cfg_scale=cfg_scale)
    seen: list[tuple[int, int, torch.Tensor]] = []
    out = diffusion_generate(model, prompt, MASK, config,
                             on_step=lambda x, block, step: seen.append((block, step, x.clone())),
                             generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 7 + 24)
    assert torch.equal(out[:, :7], prompt)
    assert not (out == MASK).any()
    assert len(seen) == config.steps
    previous = torch.full_like(out, MASK)
    previous[:, :7] = prompt
    for block, _step, x in seen:
        start, end = 7 + 8 * block, 7 + 8 * (block + 1)
        assert not (x[:, 7:start] == MASK).any(), "an earlier block was left unfinished"
        assert (x[:, end:] == MASK).all(), "a later block was filled early"
        # Each step commits its share (8 masks over 4 steps: 2) and never changes a commitment.
        newly = (previous == MASK) & (x != MASK)
        assert newly.sum(dim=1).tolist() == [2, 2]
        kept = previous != MASK
        assert torch.equal(x[kept], previous[kept])
        previous = x


def test_one_block_commits_the_most_confident_prediction_first():
    model = tiny_model(seed=2)
    prompt = torch.randint(10, 64, (1, 5))
    first: list[torch.Tensor] = []
    config = SamplerConfig(gen_length=6, steps=6, block_length=6)
    diffusion_generate(model, prompt, MASK, config,
                       on_step=lambda x, b, s: first.append(x.clone()) if not first else None)
    start = torch.full((1, 11), MASK)
    start[0, :5] = prompt
    with torch.no_grad():
        probs = model(input_ids=start).logits.softmax(-1)[0, 5:]
    best = int(probs.max(dim=-1).values.argmax())
    committed = (first[0][0, 5:] != MASK).nonzero().flatten().tolist()
    assert committed == [best]
    assert int(first[0][0, 5 + best]) == int(probs[best].argmax())


def test_schedule_spreads_the_masks_over_the_steps():
    masked = torch.ones(2, 10, dtype=torch.bool)
    masked[1, 7:] = False
    schedule = tokens_per_step(masked, 4)
    assert schedule.tolist() == [[3, 3, 2, 2], [2, 2, 2, 1]]


@pytest.mark.parametrize("kwargs, message", [
    ({"gen_length": 10, "block_length": 4}, "multiple of block_length"),
    ({"gen_length": 16, "block_length": 4, "steps": 6}, "multiple of the number of blocks"),
    ({"temperature": -1}, "temperature"),
])
def test_bad_sampler_settings_say_what_to_change(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SamplerConfig(**kwargs)
