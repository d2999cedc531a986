"""``loraforge eval`` on the tiny base: same prompts for every model, scores that can be
recomputed from what was recorded, and bad requests that write nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from rouge_score import rouge_scorer
from sqlalchemy import func, select

from registry.adapters import get_adapter
from registry.db import session_scope
from registry.evaluations import batch, latest_for_adapter
from registry.models import Evaluation
from tests.trainers.test_train_cli import run_cli
from trainers.evaluation import EvalConfig, answer_batch, load_for_eval, plan_evaluation
from trainers.generate import generate_answer


def _evaluations() -> int:
    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(Evaluation)) or 0


def test_eval_records_base_and_adapter_rows_whose_scores_recompute(trained_store, capsys):
    adapter = get_adapter(trained_store.adapter_id)
    code, out, err = run_cli(capsys, "eval", adapter.label, "--split", "train", "--limit", "6",
                             "--max-new-tokens", "24", "--batch-size", "4", "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert [r["adapter_label"] for r in rows] == [None, adapter.label]
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    for row in rows:
        assert row["examples_count"] == 6 and row["split"] == "train"
        assert row["settings"]["max_new_tokens"] == 24
        examples = row["examples"]
        assert len(examples) == 5  # keep_examples
        for ex in examples:  # the stored per-answer score is ROUGE-L of what was stored
            assert ex["rouge_l"] == pytest.approx(
                scorer.score(ex["reference"], ex["predicted"])["rougeL"].fmeasure, abs=1e-4)
        assert 0.0 <= row["metrics"]["rouge_l"] <= 1.0
        assert -1.0 <= row["metrics"]["answer_similarity"] <= 1.0
        assert row["metrics"]["latency_seconds"] > 0
    base, tuned = rows
    # Same questions and references for both rows: the prompts did not depend on the model.
    assert [e["question"] for e in base["examples"]] == [e["question"] for e in tuned["examples"]]
    # The adapter really answered: 60 steps on the tiny base are too few to promise a better
    # score (the SmolLM2 test checks the direction), but never the base's exact answers.
    assert [e["predicted"] for e in base["examples"]] != [e["predicted"] for e in
                                                         tuned["examples"]]

    found = latest_for_adapter(adapter.id)
    assert found is not None and found[1] is not None
    assert found[0].metrics == tuned["metrics"] and found[1].metrics == base["metrics"]
    code, out, _ = run_cli(capsys, "adapters", "show", adapter.label)
    assert code == 0 and "eval.rouge_l" in out and "base " in out


def test_a_batch_of_one_answers_exactly_as_plain_greedy_generation(trained_store):
    plan = plan_evaluation([str(trained_store.adapter_id)], None, None, EvalConfig(limit=3))
    model, tokenizer = load_for_eval(plan.base, plan.adapters)
    model.set_adapter(f"adapter{trained_store.adapter_id}")
    for chat in plan.chats:
        batched, made = answer_batch(model, tokenizer, [chat[:-1]], 20)
        assert batched == [generate_answer(model, tokenizer, chat[:-1], max_new_tokens=20)]
        assert 0 < made <= 20


def test_the_base_row_answers_with_the_adapter_switched_off(trained_store):
    """The base-only row must be the bare base, not the last adapter attached."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    plan = plan_evaluation([str(trained_store.adapter_id)], None, None, EvalConfig(limit=2))
    model, tokenizer = load_for_eval(plan.base, plan.adapters)
    bare = AutoModelForCausalLM.from_pretrained(plan.base.model_path).eval()
    bare_tokenizer = AutoTokenizer.from_pretrained(plan.base.model_path)
    prompts = [chat[:-1] for chat in plan.chats]
    with model.disable_adapter():
        ours, _ = answer_batch(model, tokenizer, prompts[:1], 16)
    assert ours == [generate_answer(bare, bare_tokenizer, prompts[0], max_new_tokens=16)]


@pytest.mark.parametrize("args, message", [
    (["no-such-adapter:v1"], "no adapter 'no-such-adapter:v1'"),
    (["tiny-lora:v1", "--dataset", "nope"], "no dataset snapshot called 'nope'"),
    (["tiny-lora:v1", "--split", "validation"], "has no validation questions"),
    (["tiny-lora:v1", "--split", "dev"], "split must be test, validation or train"),
    (["tiny-lora:v1", "--max-new-tokens", "0"], "max new tokens must be at least 1"),
    (["tiny-lora:v1", "tiny-lora:v1"], "an adapter is named twice"),
    ([], "name at least one adapter"),
    (["--base", "nope"], "no base model called 'nope'"),
    (["tiny-lora:v1", "--no-base", "--batch-size", "0"], "batch size must be at least 1"),
])
def test_bad_eval_requests_are_one_line_and_record_nothing(trained_store, capsys, args, message):
    before = _evaluations()
    code, out, err = run_cli(capsys, "eval", *args)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert _evaluations() == before


def test_a_pickle_only_adapter_is_refused_before_loading(trained_store, capsys, tmp_path: Path):
    from registry.adapter_ops import delete_adapter
    from registry.adapters import finish_run, start_run

    adapter = get_adapter(trained_store.adapter_id)
    pickled = tmp_path / "pickled"
    shutil.copytree(adapter.path, pickled)
    (pickled / "adapter_model.safetensors").rename(pickled / "adapter_model.bin")
    run_id = start_run(method="lora", base_model_id=trained_store.base_id,
                       snapshot_id=trained_store.snapshot_id, config={})
    pickled_id = finish_run(run_id, adapter_name="pickled", version=1, path=str(pickled),
                            metrics={}, loss_curve=[])
    try:
        before = _evaluations()
        code, _, err = run_cli(capsys, "eval", "pickled:v1")
        assert code == 1 and "only safetensors are accepted" in err
        assert _evaluations() == before
        assert batch("no-such-batch") == []
    finally:  # the store is shared by the session's trainer tests
        delete_adapter(pickled_id)


def test_eval_as_a_job_reports_progress_per_model_and_its_batch(trained_store):
    """The app and the demo run `loraforge eval` as a job: they get a progress event per batch of
    answers for each model, and the recorded batch in the result, not a guess from the table."""
    from core.jobs import Job, loraforge_argv

    label = get_adapter(trained_store.adapter_id).label
    job = Job(loraforge_argv("eval", label, "--limit", "3", "--batch-size", "1",
                             "--max-new-tokens", "4"), {"LORAFORGE_HOME": str(trained_store.home)})
    updates = list(job.updates())
    result = updates[-1].result
    assert result is not None and result.ok, result
    steps: dict[str, list[int]] = {}
    for event in (u.progress for u in updates if u.progress is not None):
        if event["step"] not in steps.setdefault(event["model"], []):
            steps[event["model"]].append(event["step"])
    assert len(steps) == 2 and all(s == [1, 2, 3] for s in steps.values()), steps
    rows = batch(result.data["evaluation_batch"])
    assert sorted(r.model_label for r in rows) == sorted(steps)
