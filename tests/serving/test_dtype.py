"""Serving in bfloat16 (``--dtype bfloat16``): replies equal to transformers' own in that dtype,
float32 adapters applied to their own rows of a bfloat16 base, and the base's weights read back
as loaded after a merge; and what ``auto`` picks."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from core.device import resolve_dtype
from serving.engine import BASE_ONLY, ChatEngine
from serving.errors import ChatError
from tests.serving.test_batching import _ask, _concurrently

LONG = 48  # new tokens: a lone adapter is merged only when some row has at least 32 left


def test_auto_is_float32_on_a_cpu_and_bfloat16_on_a_gpu_and_others_are_refused(chat_store):
    engine = ChatEngine(base="tiny-chat", device="cpu")
    engine.load()
    assert engine.dtype == engine.model.dtype == torch.float32
    assert resolve_dtype("auto", "cuda") == torch.bfloat16
    assert resolve_dtype("float32", "cuda") == torch.float32
    assert resolve_dtype("bfloat16", "cpu") == torch.bfloat16
    with pytest.raises(ChatError, match="dtype must be one of auto, float32, bfloat16"):
        ChatEngine(base="tiny-chat", dtype="float16")


def test_a_bfloat16_engine_answers_as_transformers_does_in_bfloat16(chat_store):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainers.generate import generate_answer

    engine = ChatEngine(base="tiny-chat", device="cpu", dtype="bfloat16")
    question = _ask("What is glaucoma?")
    reply = engine.generate(BASE_ONLY, question, max_new_tokens=24)

    assert engine.model.dtype == torch.bfloat16
    model = AutoModelForCausalLM.from_pretrained(chat_store.base, dtype=torch.bfloat16).eval()
    tokenizer = AutoTokenizer.from_pretrained(chat_store.base)
    assert reply.strip() and reply == generate_answer(model, tokenizer, question,
                                                      max_new_tokens=24)


def _mean_log_likelihood(model, tokenizer, question: str, reply: str) -> float:
    """Mean log-probability, per reply token, of ``reply`` after ``question`` (teacher-forced)."""
    prompt = tokenizer.apply_chat_template(_ask(question), add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)["input_ids"]
    answer = tokenizer(reply, add_special_tokens=False, return_tensors="pt")["input_ids"]
    ids = torch.cat([prompt, answer], dim=1)
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, prompt.shape[1] - 1:-1].float()
    return float(logits.log_softmax(-1).gather(1, answer[0][:, None]).mean())


def test_bfloat16_rows_on_several_adapters_each_follow_their_own_adapter(chat_store):
    """Each row of a bfloat16 batch (merged while alone, then mixed with the base and another
    adapter) is the reply its own adapter makes most likely, scored in float32 by PEFT: no
    cross-talk, and the float32 factors really reach the bfloat16 base."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    engine = ChatEngine(base="tiny-chat", device="cpu", dtype="bfloat16", gather_seconds=0.5,
                        unmerge_after_idle=600)
    engine.generate("alpha:v1", _ask("What is glaucoma?"), max_new_tokens=LONG)
    assert engine.merges == 1 and engine.merged_adapter == "alpha:v1"

    jobs = [("alpha:v1", "Why?", 24), (BASE_ONLY, "What is a low-rank adapter?", 24),
            ("beta:v1", "Is it safe?", 24), ("alpha:v1", "What is glaucoma?", 24)]
    replies = _concurrently(engine, jobs)
    assert engine.largest_batch >= 3 and engine.merged_adapter is None

    # The base's weights were read back as loaded: the files' own, cast to bfloat16.
    stored = load_file(chat_store.base / "model.safetensors")
    base = engine.model.get_base_model()
    for name, module in base.named_modules():
        layer = getattr(module, "base_layer", module)
        if type(layer) is torch.nn.Linear and f"{name}.weight" in stored:
            assert torch.equal(layer.weight, stored[f"{name}.weight"].to(torch.bfloat16)), name

    tokenizer = AutoTokenizer.from_pretrained(chat_store.base)
    reference = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(chat_store.base, dtype=torch.float32),
        chat_store.adapter_a, adapter_name="alpha")
    reference.load_adapter(chat_store.adapter_b, adapter_name="beta")
    reference.eval()

    def likelihoods(question: str, reply: str) -> dict[str, float]:
        scores = {}
        for choice in ("alpha:v1", "beta:v1"):
            reference.set_adapter(choice.split(":")[0])
            scores[choice] = _mean_log_likelihood(reference, tokenizer, question, reply)
        with reference.disable_adapter():
            scores[BASE_ONLY] = _mean_log_likelihood(reference, tokenizer, question, reply)
        return scores

    for (choice, question, _), reply in zip(jobs, replies, strict=True):
        assert reply.strip(), choice
        scores = likelihoods(question, reply)
        assert max(scores, key=scores.get) == choice, (choice, reply, scores)
