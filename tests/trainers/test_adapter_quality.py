"""The property the end-to-end demo relies on: on training questions, the LoRA adapter's greedy
answers are clearly closer to the reference than the bare tiny base's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from peft import PeftModel
from rouge_score import rouge_scorer
from transformers import AutoModelForCausalLM, AutoTokenizer

from curation.build import build_snapshot
from registry.adapters import get_adapter
from tests.trainers.conftest import _store_at, insert_qa_pairs, read_medquad
from trainers.base_model import register_base
from trainers.generate import generate_answer
from trainers.run import run_training


def _mean_rouge_l(model, tokenizer, chats: list[list[dict]]) -> float:
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    scores = [
        scorer.score(chat[-1]["content"],
                     generate_answer(model, tokenizer, chat[:-1], max_new_tokens=128))
        ["rougeL"].fmeasure
        for chat in chats
    ]
    return sum(scores) / len(scores)


@pytest.mark.slow
def test_adapter_answers_training_questions_closer_to_the_reference(trained_store, tmp_path):
    with _store_at(tmp_path / "home"):
        insert_qa_pairs(read_medquad(limit=40))
        # The session's tiny base was pretrained on these same 40 pairs for the same steps:
        # registering its files gives the base this test would build (TEST_BASE_STEPS), without
        # a minute of building it again.
        register_base("tiny", str(trained_store.home / "bases" / "tiny"))
        build_snapshot(seed=0)
        adapter = get_adapter(run_training(overrides={"max_steps": 200, "batch_size": 4,
                                                      "max_length": 256}))
        train_file = Path(adapter.path).parent.parent / "datasets"
        snapshot_dir = next(p for p in train_file.iterdir() if p.name == adapter.snapshot_name)
        chats = [json.loads(line)["messages"]
                 for line in (snapshot_dir / "train.jsonl").read_text().splitlines()][:8]
        tokenizer = AutoTokenizer.from_pretrained(adapter.base_path)
        base = AutoModelForCausalLM.from_pretrained(adapter.base_path).eval()
        without = _mean_rouge_l(base, tokenizer, chats)
        tuned = PeftModel.from_pretrained(base, adapter.path).eval()
        with_adapter = _mean_rouge_l(tuned, tokenizer, chats)
    assert with_adapter > without + 0.2, (with_adapter, without)
