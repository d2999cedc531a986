"""Where an evaluation's gain comes from: test questions close to a training answer, and the rest.

A held-out question can still have a training answer that says nearly the same thing: sites
answer one question type with one sentence and a name ("Eating, diet, and nutrition have not
been shown to play a role in causing or preventing X."). An adapter that learned the sentence
scores well on every such test question, so a mean over the split can hide how little it moved
on the others. This scores each test reference against the nearest training answer (ROUGE-L F1)
and averages every model's recorded per-answer ROUGE-L on each side of a line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from registry.evaluations import EvaluationRecord

CLOSE = 0.5  # a paraphrased template scores 0.6-0.7 against its twin, unrelated answers < 0.4


@dataclass(frozen=True)
class OverlapRow:
    label: str
    is_base: bool
    everything: float
    close: float | None  # None: no question on that side
    rest: float | None


@dataclass(frozen=True)
class Overlap:
    questions: int
    close_questions: int
    threshold: float
    rows: list[OverlapRow]

    def cells(self) -> list[tuple[str, list[str]]]:
        """Per model: its label and its three means (all, close, the rest) to three decimals,
        each adapter's with its gain over the base's."""
        base = next((r for r in self.rows if r.is_base), None)
        out = []
        for row in self.rows:
            values = (row.everything, row.close, row.rest)
            bases = (base.everything, base.close, base.rest) if base and not row.is_base \
                else (None,) * 3
            out.append((row.label, [_shown(v, b) for v, b in zip(values, bases, strict=True)]))
        return out


def nearest_training_overlap(references: list[str], training: list[str]) -> list[float]:
    """For each reference, its highest ROUGE-L F1 against any training answer."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"])
    return [max((scorer.score(ref, t)["rougeL"].fmeasure for t in training), default=0.0)
            for ref in references]


def training_answers(snapshot_name: str) -> list[str] | None:
    """The last (assistant) turn of every chat in the snapshot's train.jsonl; None when the
    snapshot or its file is gone."""
    from registry.snapshots import find_snapshot

    snapshot = find_snapshot(snapshot_name)
    path = Path(snapshot.path) / "train.jsonl" if snapshot and snapshot.path else None
    if path is None or not path.is_file():
        return None
    return [json.loads(line)["messages"][-1]["content"]
            for line in path.read_text().splitlines() if line.strip()]


def overlap_breakdown(rows: list[EvaluationRecord], training: list[str],
                      threshold: float = CLOSE) -> Overlap | None:
    """Each model's mean ROUGE-L over all questions, those whose reference has a training answer
    at ``threshold`` or more, and the rest; None when an evaluation kept only some answers."""
    if not rows:
        return None
    questions = rows[0].examples_count
    if questions == 0 or any(len(r.examples) < questions for r in rows):
        return None
    references = [e["reference"] for e in rows[0].examples[:questions]]
    close = [o >= threshold for o in nearest_training_overlap(references, training)]
    out = []
    for row in rows:
        scores = [e["rouge_l"] for e in row.examples[:questions]]
        near = [s for s, c in zip(scores, close, strict=True) if c]
        far = [s for s, c in zip(scores, close, strict=True) if not c]
        out.append(OverlapRow(row.model_label, row.adapter_label is None,
                              sum(scores) / len(scores), _mean(near), _mean(far)))
    return Overlap(questions, sum(close), threshold, out)


def _shown(value: float | None, base: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" + (f" ({value - base:+.3f})" if base is not None else "")


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None
