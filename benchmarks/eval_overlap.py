"""How much of an evaluation's ROUGE-L gain is recall of training answers.

    LORAFORGE_HOME=... python benchmarks/eval_overlap.py [BATCH_ID] [--close 0.5]

Splits the test questions of one recorded evaluation (default: the newest) by the ROUGE-L of
their reference against the nearest training answer of the snapshot (``trainers/overlap.py``),
and prints each model's mean ROUGE-L, and its gain over the base, on each side of ``--close``.
The demo's report has the same table. Needs every answer of the evaluation recorded: the demo
keeps them; for ``loraforge eval`` pass ``--examples`` with at least the number of questions.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trainers.overlap import CLOSE, overlap_breakdown, training_answers  # noqa: E402


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
    parser.add_argument("--close", type=float, default=CLOSE,
                        help="ROUGE-L against the nearest training answer at which a test "
                             "question counts as close to one.")
    args = parser.parse_args()

    from registry.evaluations import batch

    rows = batch(args.batch or _newest_batch())
    if not rows:
        sys.exit(f"error: no evaluation {args.batch!r}; `loraforge adapters show` lists them")
    training = training_answers(rows[0].snapshot_name)
    if training is None:
        sys.exit(f"error: the training split of snapshot {rows[0].snapshot_name!r} is gone")
    found = overlap_breakdown(rows, training, args.close)
    if found is None:
        sys.exit("error: this evaluation kept only some answers; re-run `loraforge eval` with "
                 f"--examples {rows[0].examples_count}")

    print(f"{rows[0].snapshot_name} / {rows[0].split}: {found.questions} questions, "
          f"{found.close_questions} with a training answer at ROUGE-L >= {found.threshold}")
    print(f"{'model':<28} {'all':>14} {'close':>14} {'the rest':>14}")
    for label, cells in found.cells():
        print(f"{label[:28]:<28} " + " ".join(f"{c:>14}" for c in cells))


if __name__ == "__main__":
    main()
