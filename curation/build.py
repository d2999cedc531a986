"""Build a dataset snapshot: select from the store → examples → leakage-free split → files + row.

A snapshot is reproducible: the same inputs, parameters and seed give the same split and the
same content hash, which is also what the default name is made from. Pieces live in
``curation/``; this module strings them together in the order they run.
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.settings import get_settings
from curation import diversity, examples, export
from curation.errors import CurationError
from curation.examples import SNAPSHOT_KINDS, Example, to_messages
from curation.formatting import encode_chat, length_stats, pack
from curation.spec import SnapshotSpec
from curation.splits import duplicate_groups, normalize, plan_split
from registry import snapshots
from registry.db import ensure_schema
from registry.models import Split

__all__ = ["build_snapshot", "to_messages", "drop_repeated_questions", "SnapshotSpec"]

EmbedProgress = Callable[[int, int], None]


def drop_repeated_questions(pairs: list[Any]) -> tuple[list[Any], int]:
    """Keep the first pair of each question (case, spacing and punctuation ignored).

    MedQuAD asks "What is (are) X ?" of several sections of one page. The same prompt with
    different targets teaches a model nothing but averaging, and would leak across a split.
    """
    seen: set[str] = set()
    kept = []
    for pair in pairs:
        key = normalize(pair.question)
        if key not in seen:
            seen.add(key)
            kept.append(pair)
    return kept, len(pairs) - len(kept)


def _answer_fits(spec: SnapshotSpec, answer: str) -> bool:
    words = len(answer.split())
    return ((spec.max_answer_words is None or words <= spec.max_answer_words)
            and (spec.min_answer_words is None or words >= spec.min_answer_words))


def _check_topic(spec: SnapshotSpec) -> None:
    if spec.topic and spec.kind != "import" and spec.topic.lower() not in snapshots.known_topics():
        known = sorted(snapshots.known_topics())
        hint = f"; known: {', '.join(known[:8])}{' …' if len(known) > 8 else ''}" if known else ""
        raise CurationError(f"unknown topic {spec.topic!r}{hint}")


def _select(spec: SnapshotSpec) -> tuple[list[Example], int]:
    """The examples the spec selects, answers within the length window, and how many
    repeated questions were dropped."""
    if spec.kind == "qa":
        # The length window goes first: MedQuAD asks one question of several sections of a
        # page, and the pair kept should be one that fits the window, not just the first.
        fitting = [p for p in snapshots.select_qa_pairs(where=spec.where)
                   if _answer_fits(spec, p.answer)]
        pairs, repeated = drop_repeated_questions(fitting)
        return examples.from_qa_pairs(pairs, spec.system_prompt), repeated
    if spec.kind == "import":
        found = examples.read_instruction_file(Path(spec.import_file or ""))
    else:
        articles = snapshots.select_articles(spec.where)
        found = (examples.from_article_chunks(articles, spec.chunk_words)
                 if spec.kind == "chunks"
                 else examples.from_article_headings(articles, spec.system_prompt))
    return [e for e in found if _answer_fits(spec, e.answer)], 0


def _empty_selection(spec: SnapshotSpec) -> CurationError:
    filters = spec.where.describe() if spec.kind != "import" else ""
    if spec.max_answer_words is not None:
        filters = " and ".join(f for f in (filters, f"--max-answer-words {spec.max_answer_words}")
                               if f)
    if spec.min_answer_words is not None:
        filters = " and ".join(f for f in (filters, f"--min-answer-words {spec.min_answer_words}")
                               if f)
    what = {"qa": "QA pairs", "chunks": "articles", "headings": "article sections",
            "import": "records"}[spec.kind]
    if filters:
        return CurationError(f"no {what} match {filters}; widen or drop them")
    if spec.kind == "import":
        return CurationError(f"{spec.import_file} holds no records")
    return CurationError(f"no {what} in the store; crawl some first (`loraforge crawl ...`)")


@dataclass
class _Built:
    chosen: list[Example]
    counts: dict[str, Any]
    diverse: tuple[Any, Any] | None = None  # (embeddings, DiverseChoice) for the plot


def _narrow(spec: SnapshotSpec, chosen: list[Example],
            progress: EmbedProgress | None) -> _Built:
    counts: dict[str, Any] = {}
    if spec.limit is not None and spec.limit < len(chosen):
        picked = set(random.Random(spec.seed).sample(range(len(chosen)), spec.limit))
        chosen = [e for i, e in enumerate(chosen) if i in picked]
    if spec.clusters and chosen:
        encoder = diversity.load_encoder(spec.encoder)
        vectors = diversity.embed([f"{e.prompt}\n{e.answer}".strip() for e in chosen], encoder,
                                  progress=progress)
        labels = diversity.cluster(vectors, spec.clusters, spec.seed)
        choice = diversity.choose_per_cluster(labels, spec.per_cluster, spec.seed)
        counts["clusters"] = {str(k): v for k, v in sorted(choice.per_cluster.items())}
        counts["cluster_top_up"] = choice.topped_up
        return _Built([chosen[i] for i in choice.chosen], counts, (vectors, choice))
    return _Built(chosen, counts)


def _split(spec: SnapshotSpec, chosen: list[Example]) -> tuple[dict[str, list[Example]], dict]:
    fields = [[e.prompt for e in chosen], [e.answer for e in chosen]]
    if spec.kind == "chunks":
        fields = fields[1:]  # chunks have no prompt
    groups = duplicate_groups(fields, spec.near_duplicate_threshold, spec.shared_words)
    strata = [e.columns.get(spec.stratify) if spec.stratify else None for e in chosen]
    plan = plan_split(groups, strata, validation_fraction=spec.validation_fraction,
                      test_fraction=spec.test_fraction, seed=spec.seed)
    parts: dict[str, list[Example]] = defaultdict(list)
    for example, split in zip(chosen, plan.assignment, strict=True):
        parts[split].append(example)
    return ({s: parts.get(s, []) for s in ("train", "validation", "test")},
            {"duplicate_groups": plan.groups, "grouped_examples": plan.grouped_examples})


def _content_hash(params: dict[str, Any], seed: int, parts: dict[str, list[Example]]) -> str:
    import hashlib

    members = sorted((e.key, split) for split, rows in parts.items() for e in rows)
    payload = json.dumps({"params": params, "seed": seed, "members": members}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def _load_tokenizer(name: str):
    from transformers import AutoTokenizer

    from registry.bases import find_base

    base = find_base(name)
    path = base.model_path if base is not None else name
    if base is None and not Path(path).is_dir():
        raise CurationError(f"no base model or tokenizer directory called {name!r}; see "
                           "`loraforge base list`")
    return AutoTokenizer.from_pretrained(path, local_files_only=True)


def _tokenize(spec: SnapshotSpec, parts: dict[str, list[Example]], out: Path,
              ) -> tuple[dict[str, list[int]], dict[str, Any]]:
    """Write tokenized/<split>.jsonl; return full token lengths per split and what happened."""
    tokenizer = _load_tokenizer(spec.tokenizer or "")
    (out / "tokenized").mkdir()
    lengths: dict[str, list[int]] = {}
    truncated = no_target = 0
    for split, rows in parts.items():
        encoded = []
        for e in rows:
            if e.messages is not None:
                enc = encode_chat(e.messages, tokenizer, spec.template, spec.max_length)
            else:
                enc = _encode_text(e.text or "", tokenizer, spec.max_length)
            encoded.append(enc)
        lengths[split] = [e.full_length for e in encoded]
        truncated += sum(e.truncated for e in encoded)
        no_target += sum(all(label == -100 for label in e.labels) for e in encoded)
        packed = pack(encoded, spec.max_length) if spec.packing else encoded
        if rows:
            export.write_jsonl(out / "tokenized" / f"{split}.jsonl", export.tokenized_rows(packed))
    return lengths, {"truncated": truncated, "truncated_to_no_target": no_target}


def _encode_text(text: str, tokenizer, max_length: int):
    from curation.formatting import EncodedExample

    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        ids = [*ids, tokenizer.eos_token_id]
    return EncodedExample(ids[:max_length], ids[:max_length], len(ids))


def _word_lengths(parts: dict[str, list[Example]]) -> dict[str, list[int]]:
    return {split: [len(f"{e.prompt} {e.answer}".split()) for e in rows]
            for split, rows in parts.items()}


def _write_files(spec: SnapshotSpec, built: _Built, parts: dict[str, list[Example]],
                 out: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split files, tokenized rows and plots into ``out``; returns (token stats, extra counts)."""
    for split, rows in parts.items():
        if rows or split != "validation":  # the LoRA backend expects train and test to exist
            export.write_jsonl(out / f"{split}.jsonl", (e.row() for e in rows))
    extra: dict[str, Any] = {}
    if spec.tokenizer:
        lengths, extra = _tokenize(spec, parts, out)
        unit = "tokens"
    else:
        lengths, unit = _word_lengths(parts), "words"
    every = [n for split in lengths.values() for n in split]
    stats = {**length_stats(every, unit),
             "per_split": {s: length_stats(v, unit) for s, v in lengths.items() if v}}
    if unit == "words":  # the answer-only numbers the older snapshots recorded
        answers = [len(e.answer.split()) for rows in parts.values() for e in rows]
        stats.update(answer_mean=round(sum(answers) / len(answers), 1), answer_max=max(answers))
    export.plot_length_histogram(lengths, unit, out / export.HISTOGRAM,
                                 spec.max_length if spec.tokenizer else None)
    if built.diverse is not None:
        diversity.plot_clusters(*built.diverse, out / export.CLUSTERS)
    return stats, extra


def _members(parts: dict[str, list[Example]]) -> list[snapshots.SnapshotMember]:
    """One member per stored origin: an article's chunks or sections share one split."""
    seen: set[tuple[str, int]] = set()
    members = []
    for split, rows in parts.items():
        for e in rows:
            origin = ("qa", e.qa_pair_id) if e.qa_pair_id is not None else ("article", e.article_id)
            if origin[1] is None or origin in seen:
                continue
            seen.add(origin)
            members.append(snapshots.SnapshotMember(Split(split), e.qa_pair_id, e.article_id))
    return members


def _topic_counts(parts: dict[str, list[Example]]) -> dict[str, dict[str, int]]:
    counts: dict[str, Counter] = defaultdict(Counter)
    for split, rows in parts.items():
        for e in rows:
            counts[str(e.columns.get("topic") or "-")][split] += 1
    return {topic: dict(c) for topic, c in sorted(counts.items())}


def build_snapshot(
    name: str | None = None,
    test_fraction: float = 0.1,
    seed: int = 0,
    limit: int | None = None,
    system_prompt: str | None = None,
    topic: str | None = None,
    max_answer_words: int | None = None,
    *,
    embed_progress: EmbedProgress | None = None,
    **options: Any,
) -> int:
    """Freeze a selection of the store into a named snapshot; returns its id.

    ``options`` are the other fields of ``SnapshotSpec`` (kind, validation_fraction, source,
    clusters, tokenizer, template, ...). Building the same snapshot twice returns the existing
    one; reusing a name for different content is an error. Nothing is recorded on failure.
    """
    spec = SnapshotSpec(test_fraction=test_fraction, seed=seed, limit=limit,
                        system_prompt=system_prompt, topic=topic,
                        max_answer_words=max_answer_words, **options)
    ensure_schema()
    _check_topic(spec)
    found, repeated = _select(spec)
    built = _narrow(spec, found, embed_progress)
    if not built.chosen:
        raise _empty_selection(spec)
    parts, leak_counts = _split(spec, built.chosen)
    params = spec.as_params()
    content_hash = _content_hash(params, spec.seed, parts)
    name = name or f"{spec.kind}-{content_hash[:8]}"

    existing = snapshots.find_snapshot(name)
    if existing is not None:
        if existing.content_hash == content_hash:
            return existing.id
        raise CurationError(f"a different snapshot is already called {name!r}; pick another --name")

    counts: dict[str, Any] = {split: len(rows) for split, rows in parts.items()}
    counts.update(total=len(built.chosen), repeated_questions_dropped=repeated, **leak_counts,
                  **built.counts, topics=_topic_counts(parts))
    final_dir = get_settings().datasets_dir / name
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    # Files go to a temp dir first and are renamed in place, so a crash leaves no half snapshot.
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=final_dir.parent))
    try:
        stats, extra = _write_files(spec, built, parts, tmp_dir)
        counts.update(extra)
        if final_dir.exists():  # left over from a store that was reset
            shutil.rmtree(final_dir)
        tmp_dir.rename(final_dir)
        return snapshots.create_snapshot(
            name=name, kind=SNAPSHOT_KINDS[spec.kind], params=params, seed=spec.seed,
            content_hash=content_hash, counts=counts, token_stats=stats, path=str(final_dir),
            members=_members(parts),
        )
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        shutil.rmtree(final_dir, ignore_errors=True)
        raise
