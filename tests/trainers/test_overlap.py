"""The gain breakdown by closeness to a training answer, against rouge_score computed here."""

from __future__ import annotations

from rouge_score import rouge_scorer

from registry.evaluations import EvaluationRecord
from trainers.overlap import overlap_breakdown

TRAINING = [
    "Researchers have not found that eating, diet, and nutrition play a role in causing or "
    "preventing kidney dysplasia.",
    "Acromegaly is a hormonal disorder that results from too much growth hormone in the body.",
]
REFERENCES = [
    "Eating, diet, and nutrition have not been shown to play a role in causing or preventing "
    "hematuria.",
    "Glaucoma is a group of diseases that can damage the eye's optic nerve.",
    "Hookworms are spread through contact with contaminated soil.",
]


def _row(label: str | None, answers: list[str], kept: int | None = None) -> EvaluationRecord:
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    examples = [{"question": f"q{i}", "reference": ref, "predicted": ans,
                 "rouge_l": scorer.score(ref, ans)["rougeL"].fmeasure}
                for i, (ref, ans) in enumerate(zip(REFERENCES, answers, strict=True))]
    return EvaluationRecord(id=0, batch_id="b", base_name="base", adapter_label=label,
                            snapshot_name="s", split="test", examples_count=len(REFERENCES),
                            metrics={}, examples=examples[:kept])


def test_questions_near_a_training_answer_are_scored_apart_from_the_rest():
    base = _row(None, ["Diet matters a lot.", "Glaucoma hurts.", "Worms live in soil."])
    adapter = _row("a:v1", [TRAINING[0].replace("kidney dysplasia", "hematuria"),
                            "Glaucoma is a disease of the eye.", "Hookworms live in soil."])
    found = overlap_breakdown([base, adapter], TRAINING)

    scorer = rouge_scorer.RougeScorer(["rougeL"])
    nearest = [max(scorer.score(r, t)["rougeL"].fmeasure for t in TRAINING) for r in REFERENCES]
    assert [n >= 0.5 for n in nearest] == [True, False, False]  # the paraphrased template only
    assert (found.questions, found.close_questions) == (3, 1)
    for record, row in zip([base, adapter], found.rows, strict=True):
        scores = [e["rouge_l"] for e in record.examples]
        assert row.is_base == (record.adapter_label is None)
        assert row.everything == sum(scores) / 3
        assert row.close == scores[0]
        assert row.rest == (scores[1] + scores[2]) / 2
    assert found.rows[1].close - found.rows[0].close > 0.5  # it recites the template


def test_an_evaluation_that_kept_only_some_answers_gives_no_breakdown():
    rows = [_row(None, ["a", "b", "c"]), _row("a:v1", ["a", "b", "c"], kept=2)]
    assert overlap_breakdown(rows, TRAINING) is None
