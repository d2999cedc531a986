"""Held-out evaluation: the base alone and the base with each adapter answer the same questions.

Every model answers the snapshot split's questions greedily, with the same prompts (the chats'
own turns through the base's chat template) and the same new-token budget, in left-padded
batches. Each answer is scored against the reference by ROUGE-L F1, exact match (after
lowercasing and dropping punctuation) and answer similarity: the cosine of MiniLM sentence
embeddings. The base is loaded once; adapters are attached to it with PEFT one after another.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from core.device import resolve_device
from registry import bases, evaluations, snapshots
from registry.adapter_files import check_adapter_dir
from registry.adapters import AdapterRecord, get_adapter
from registry.db import ensure_schema
from trainers.errors import TrainerError
from trainers.eval_config import EvalConfig
from trainers.metrics import normalize_answer

# (model label, answers done, answers in all) after each batch.
ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True)
class ModelScores:
    """One model's answers and their scores, before they are recorded."""

    label: str
    adapter_id: int | None
    rouge_l: list[float]
    exact: list[float]
    similarity: list[float]
    answers: list[str]
    seconds: float
    new_tokens: int

    def metrics(self) -> dict[str, Any]:
        n = len(self.answers)

        def mean(values: list[float]) -> float | None:
            return round(sum(values) / len(values), 4) if values else None

        return {
            "rouge_l": mean(self.rouge_l), "exact_match": mean(self.exact),
            "answer_similarity": mean(self.similarity), "questions": n,
            "latency_seconds": round(self.seconds / n, 3) if n else None,
            "tokens_per_second": round(self.new_tokens / self.seconds, 1) if self.seconds else None,
            "wall_seconds": round(self.seconds, 2),
        }


@dataclass(frozen=True)
class EvalPlan:
    """What an evaluation will load and ask, resolved and checked before any model loads."""

    base: bases.BaseRecord
    adapters: list[AdapterRecord]
    snapshot: snapshots.SnapshotRecord
    chats: list[list[dict]]


def plan_evaluation(adapter_keys: list[str], dataset: str | None, base: str | None,
                    config: EvalConfig) -> EvalPlan:
    """Resolve names to records and read the split; every bad input fails here, before loading."""
    ensure_schema()
    adapters = [get_adapter(key) for key in adapter_keys]
    if len({a.id for a in adapters}) != len(adapters):
        raise TrainerError("an adapter is named twice; give each once")
    base_names = {a.base_name for a in adapters} | ({base} if base else set())
    if len(base_names) > 1:
        raise TrainerError(f"the adapters are on different bases ({', '.join(sorted(base_names))})"
                           "; evaluate each base's adapters in their own call")
    if not base_names:
        raise TrainerError("name at least one adapter, or --base NAME to evaluate a base alone")
    base_record = bases.find_base(next(iter(base_names)))
    if base_record is None:
        raise TrainerError(f"no base model called {next(iter(base_names))!r}; see "
                           "`loraforge base list`")
    if base_record.kind != "causal":
        raise TrainerError(f"base {base_record.name!r} is a {base_record.kind.replace('_', '-')} "
                           "LM; `loraforge eval` answers with causal LMs only for now (the "
                           "trainer's own test-split scores are in `loraforge adapters show`)")
    for adapter in adapters:
        check_adapter_dir(Path(adapter.path), f"adapter {adapter.label}")
    snapshot_name = dataset or next((a.snapshot_name for a in adapters if a.snapshot_name), None)
    if snapshot_name is None:
        raise TrainerError("no dataset snapshot recorded for these adapters; pass --dataset NAME "
                           "(see `loraforge data list`)")
    snapshot = snapshots.find_snapshot(snapshot_name)
    if snapshot is None or not snapshot.path:
        raise TrainerError(f"no dataset snapshot called {snapshot_name!r}; see "
                           "`loraforge data list`")
    chats = _read_split(Path(snapshot.path) / f"{config.split}.jsonl")
    if not chats:
        raise TrainerError(f"snapshot {snapshot_name!r} has no {config.split} questions; rebuild "
                           "it with a --test-fraction above 0 or pick another --split")
    return EvalPlan(base_record, adapters, snapshot, chats[: config.limit])


def _read_split(path: Path) -> list[list[dict]]:
    from trainers.backends.sft import load_chats

    try:
        chats = load_chats(path)
    except (ValueError, KeyError, TypeError) as exc:  # json.JSONDecodeError is a ValueError
        raise TrainerError(f"{path} is not a snapshot split (JSONL of {{\"messages\": [...]}}: "
                           f"{exc!r}); rebuild the snapshot") from exc
    return [c for c in chats if len(c) > 1 and isinstance(c[-1], dict)
            and c[-1].get("role") == "assistant"]


def run_evaluation(plan: EvalPlan, config: EvalConfig,
                   progress: ProgressFn | None = None) -> str:
    """Answer and score with every model, record the rows; returns the evaluation's batch id."""
    from curation.diversity import load_encoder

    encoder = load_encoder(config.encoder)
    references = [chat[-1]["content"] for chat in plan.chats]
    reference_vectors = _embed(encoder, references)
    model, tokenizer = load_for_eval(plan.base, plan.adapters)
    results: list[ModelScores] = []
    models: list[tuple[str, int | None]] = (
        [(f"{plan.base.name} (base only)", None)] if config.include_base else [])
    models += [(a.label, a.id) for a in plan.adapters]
    for label, adapter_id in models:
        answers, seconds, new_tokens = _answer_all(model, tokenizer, plan.chats, config,
                                                   adapter_id, label, progress)
        results.append(_score(label, adapter_id, references, reference_vectors, answers,
                              _embed(encoder, answers), seconds, new_tokens))
    batch_id = uuid.uuid4().hex
    questions = [_question(chat) for chat in plan.chats]
    evaluations.record_batch(
        batch_id=batch_id, base_model_id=plan.base.id, snapshot_id=plan.snapshot.id,
        split=config.split, settings={**asdict(config), "device": str(model.device)},
        results=[evaluations.NewEvaluation(
            adapter_id=r.adapter_id, metrics=r.metrics(), examples_count=len(r.answers),
            examples=[{"question": q, "reference": ref, "predicted": a, "rouge_l": round(s, 4)}
                      for q, ref, a, s in zip(questions, references, r.answers, r.rouge_l,
                                              strict=True)][: config.keep_examples])
            for r in results])
    return batch_id


def load_for_eval(base: bases.BaseRecord, adapters: list[AdapterRecord]):
    """The base (safetensors only) with every adapter attached under its id, and its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from core.small_batch_linear import speed_up_small_batches

    device = resolve_device()
    try:
        tokenizer = AutoTokenizer.from_pretrained(base.model_path)
        model = AutoModelForCausalLM.from_pretrained(base.model_path, dtype=torch.float32,
                                                     use_safetensors=True)
    except (OSError, ValueError) as exc:
        raise TrainerError(f"cannot load base {base.name!r} from {base.model_path} "
                           f"({str(exc).splitlines()[0]})") from exc
    tokenizer.padding_side = "left"  # batched generation continues every row at its end
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if adapters:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapters[0].path, adapter_name=_peft_name(
            adapters[0].id))
        for adapter in adapters[1:]:
            model.load_adapter(adapter.path, adapter_name=_peft_name(adapter.id))
    model.to(device)
    speed_up_small_batches(model)  # eval decodes its questions in batches; the engine does too
    return model.eval(), tokenizer


def _peft_name(adapter_id: int) -> str:
    return f"adapter{adapter_id}"


def _answer_all(model, tokenizer, chats: list[list[dict]], config: EvalConfig,
                adapter_id: int | None, label: str,
                progress: ProgressFn | None) -> tuple[list[str], float, int]:
    """(answers, seconds spent generating, new tokens made) for one model."""
    from contextlib import nullcontext

    if adapter_id is not None:
        model.set_adapter(_peft_name(adapter_id))
        context = nullcontext()
    else:
        context = model.disable_adapter() if hasattr(model, "disable_adapter") else nullcontext()
    answers: list[str] = []
    seconds, new_tokens = 0.0, 0
    with context:
        for start in range(0, len(chats), config.batch_size):
            batch = [chat[:-1] for chat in chats[start:start + config.batch_size]]
            began = time.perf_counter()
            texts, made = answer_batch(model, tokenizer, batch, config.max_new_tokens)
            seconds += time.perf_counter() - began
            new_tokens += made
            answers.extend(texts)
            if progress is not None:
                progress(label, len(answers), len(chats))
    return answers, seconds, new_tokens


@torch.no_grad()
def answer_batch(model, tokenizer, batch: list[list[dict]],
                 max_new_tokens: int) -> tuple[list[str], int]:
    """Greedy answers to several chats at once; returns them and how many tokens were made."""
    prompts = [tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
               for messages in batch]
    # The template already opens with any BOS it wants; a second one would change the prompt.
    inputs = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    inputs = {k: v.to(model.device) for k, v in inputs.items()}
    output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                            eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.pad_token_id)
    new = output[:, inputs["input_ids"].shape[1]:]
    made = int((new != tokenizer.pad_token_id).sum()) if tokenizer.pad_token_id is not None \
        else new.numel()
    return [tokenizer.decode(row, skip_special_tokens=True).strip() for row in new], made


def _embed(encoder, texts: list[str]):
    from curation.diversity import embed

    return embed([t if t.strip() else " " for t in texts], encoder)


def _score(label: str, adapter_id: int | None, references: list[str], reference_vectors,
           answers: list[str], answer_vectors, seconds: float, new_tokens: int) -> ModelScores:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"])
    rouge = [scorer.score(ref, ans)["rougeL"].fmeasure for ref, ans in zip(references, answers,
                                                                          strict=True)]
    exact = [float(normalize_answer(ref) == normalize_answer(ans))
             for ref, ans in zip(references, answers, strict=True)]
    similarity = [float(v) for v in (reference_vectors * answer_vectors).sum(axis=1)]
    return ModelScores(label, adapter_id, rouge, exact, similarity, answers, seconds, new_tokens)


def _question(chat: list[dict]) -> str:
    return next((m["content"] for m in reversed(chat[:-1]) if m["role"] == "user"), "")
