"""How much of an evaluation's ROUGE-L gain is recall of training answers.

    LORAFORGE_HOME=... python benchmarks/eval_overlap.py [BATCH_ID] [--close 0.5]

A held-out question can still have a training answer that says nearly the same thing: sites
answer one question type with one sentence and a name ("Eating, diet, and nutrition have not
been shown to play a role in causing or preventing X."). An adapter that learned that sentence
scores well on every such test question. This splits the test questions of one recorded
evaluation (default: the newest) by the ROUGE-L of their reference against the nearest training
answer of the snapshot, and prints each model's mean ROUGE-L, and its gain over the base, on
each side of ``--close``. Needs every answer of the evaluation recorded: the demo keeps them;
for ``loraforge eval`` pass ``--examples`` with at least the number of questions.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def nearest_training_overlap(references: list[str], training: list[str]) -> list[float]:
    """For each reference, its highest ROUGE-L F1 against any training answer."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"])
    return [max((scorer.score(ref, t)["rougeL"].fmeasure for t in training), default=0.0)
            for ref in references]


def _newest_batch() -> str:
    from sqlalchemy import select

    from registry.db import session_scope
    from registry.models import Evaluation

    with session_scope() as session:
        batch_id = session.scalars(select(Evaluation.batch_id)
                                   .order_by(Evaluation.id.desc())).first()
    if batch_id is None:
        sys.exit("error: no evaluation is recorded; run `loraforge eval` or the demo first")
    return batch_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("batch", nargs="?", help="Evaluation batch id (default: the newest).")
    parser.add_argument("--close", type=float, default=0.5,
                        help="ROUGE-L against the nearest training answer at which a test "
                             "question counts as close to one.")
    args = parser.parse_args()

    from registry.evaluations import batch
    from registry.snapshots import find_snapshot

    rows = batch(args.batch or _newest_batch())
    if not rows:
        sys.exit(f"error: no evaluation {args.batch!r}; `loraforge adapters show` lists them")
    questions = rows[0].examples_count
    if any(len(r.examples) < questions for r in rows):
        sys.exit("error: this evaluation kept only some answers; re-run `loraforge eval` with "
                 f"--examples {questions}")
    snapshot = find_snapshot(rows[0].snapshot_name)
    train_file = Path(snapshot.path or "") / "train.jsonl"
    if not train_file.is_file():
        sys.exit(f"error: the snapshot's training file {train_file} is gone")
    training = [json.loads(line)["messages"][-1]["content"]
                for line in train_file.read_text().splitlines() if line.strip()]
    references = [e["reference"] for e in rows[0].examples[:questions]]
    overlap = nearest_training_overlap(references, training)
    close = [o >= args.close for o in overlap]

    print(f"{rows[0].snapshot_name} / {rows[0].split}: {questions} questions, "
          f"{sum(close)} with a training answer at ROUGE-L >= {args.close}")
    print(f"{'model':<28} {'all':>14} {'close':>14} {'the rest':>14}")
    base = None
    for row in rows:
        scores = [e["rouge_l"] for e in row.examples[:questions]]
        means = [_mean([s for s, c in zip(scores, close, strict=True) if keep(c)])
                 for keep in (lambda c: True, bool, lambda c: not c)]
        base = base or means
        cells = [_cell(m, b if row.adapter_label else None)
                 for m, b in zip(means, base, strict=True)]
        print(f"{row.model_label[:28]:<28} " + " ".join(f"{c:>14}" for c in cells))


def _cell(value: float | None, base: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" + (f" ({value - base:+.3f})" if base is not None else "")


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


if __name__ == "__main__":
    main()
