"""Snapshot files: split JSONL that ``datasets.load_dataset("json", ...)`` reads, tokenized
rows, a token-length histogram, and an export of all of it to another folder."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from curation.errors import CurationError
from curation.formatting import EncodedExample, PackedRow
from registry.files import build_dir

HISTOGRAM = "token_lengths.png"
CLUSTERS = "clusters.png"
CARD = "snapshot.json"
SPLIT_FILES = ("train.jsonl", "validation.jsonl", "test.jsonl")


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    n = 0
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def tokenized_rows(encoded: list[EncodedExample] | list[PackedRow]) -> Iterable[dict[str, Any]]:
    for item in encoded:
        if isinstance(item, PackedRow):
            yield {"input_ids": item.input_ids, "labels": item.labels,
                   "position_ids": item.position_ids, "lengths": item.lengths}
        else:
            yield {"input_ids": item.input_ids, "labels": item.labels}


def plot_length_histogram(lengths_by_split: dict[str, list[int]], unit: str, out: Path,
                          max_length: int | None = None) -> Path:
    """One histogram per split, overlaid, with the truncation length marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for split, lengths in lengths_by_split.items():
        if lengths:
            ax.hist(lengths, bins=40, alpha=0.6, label=f"{split} ({len(lengths)})")
    if max_length is not None:
        ax.axvline(max_length, color="black", linestyle="--", label=f"max length {max_length}")
    ax.set(title="example lengths", xlabel=unit, ylabel="examples")
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def export_snapshot(snapshot_dir: Path, out: Path, card: dict[str, Any]) -> list[Path]:
    """Copy a snapshot's split files, tokenized rows and plots to ``out``, with a card."""
    if not snapshot_dir.is_dir():
        raise CurationError(f"the snapshot's files are gone from {snapshot_dir}; rebuild it with "
                           "`loraforge data build`")
    if out.exists() and not out.is_dir():
        raise CurationError(f"{out} is a file; export into a new or empty folder")
    if out.exists() and any(out.iterdir()):
        raise CurationError(f"{out} is not empty; export into a new or empty folder")
    names = [*(n for n in (*SPLIT_FILES, HISTOGRAM, CLUSTERS) if (snapshot_dir / n).is_file()),
             *(["tokenized"] if (snapshot_dir / "tokenized").is_dir() else []), CARD]
    # Written beside ``out`` and renamed into place: a full disk leaves no half an export.
    with build_dir(out) as tmp:
        for name in names[:-1]:
            source = snapshot_dir / name
            if source.is_dir():
                shutil.copytree(source, tmp / name)
            else:
                shutil.copy2(source, tmp / name)
        (tmp / CARD).write_text(json.dumps(card, indent=2, sort_keys=True, default=str) + "\n",
                                encoding="utf-8")
    written = [out / name for name in names]
    return written
