"""Chats → token ids and labels: loss on assistant tokens only, truncation, padding-free packing."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from curation.errors import CurationError
from curation.templates import (
    TOKENIZER_TEMPLATE,
    Messages,
    builtin_segments,
    resolve_template,
)

IGNORE_INDEX = -100  # what torch's cross-entropy and every HF model skip
DEFAULT_MAX_LENGTH = 512  # both source studies train on 512-token windows


@dataclass(frozen=True)
class EncodedExample:
    input_ids: list[int]
    labels: list[int]
    full_length: int  # before truncation

    @property
    def truncated(self) -> bool:
        return self.full_length > len(self.input_ids)


@dataclass
class PackedRow:
    """Several examples in one row; ``position_ids`` restart at 0 where each example starts,
    which is how flash-attention and HF's ``DataCollatorWithFlattening`` find the boundaries."""

    input_ids: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    position_ids: list[int] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _builtin_ids(segments: Iterable[tuple[str, bool]], tokenizer) -> tuple[list[int], list[int]]:
    input_ids: list[int] = []
    labels: list[int] = []
    for text, trained in segments:
        ids = _ids(tokenizer, text)
        input_ids.extend(ids)
        labels.extend(ids if trained else [IGNORE_INDEX] * len(ids))
    return input_ids, labels


def _own_template_ids(messages: Messages, tokenizer) -> tuple[list[int], list[int]]:
    """The tokenizer's template, rendered prefix by prefix: each assistant turn is trained from
    the end of the prompt that asks for it (generation prompt included) to the end of its turn."""
    def rendered(upto: int, generation_prompt: bool) -> list[int]:
        text = tokenizer.apply_chat_template(messages[:upto], tokenize=False,
                                             add_generation_prompt=generation_prompt)
        return _ids(tokenizer, text)

    input_ids = rendered(len(messages), False)
    labels = [IGNORE_INDEX] * len(input_ids)
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = len(rendered(i, True))
        end = len(rendered(i + 1, False))
        labels[start:end] = input_ids[start:end]
    return input_ids, labels


def encode_chat(messages: Messages, tokenizer, template: str = "auto",
                max_length: int | None = DEFAULT_MAX_LENGTH) -> EncodedExample:
    """Token ids and labels of one chat; labels are ``IGNORE_INDEX`` except on assistant tokens.

    ``max_length`` cuts from the right (None keeps everything); ``EncodedExample.truncated``
    says whether it did.
    """
    if max_length is not None and max_length < 1:
        raise CurationError(f"max length must be at least 1, got {max_length}; the default is 512")
    name = resolve_template(template, tokenizer)
    if name == TOKENIZER_TEMPLATE:
        input_ids, labels = _own_template_ids(messages, tokenizer)
    else:
        input_ids, labels = _builtin_ids(builtin_segments(name, messages, tokenizer), tokenizer)
    full = len(input_ids)
    if max_length is not None:
        input_ids, labels = input_ids[:max_length], labels[:max_length]
    return EncodedExample(input_ids, labels, full)


def pack(examples: Iterable[EncodedExample], max_length: int) -> list[PackedRow]:
    """Greedy padding-free packing in the given order: a row is closed when the next example
    would overflow it. Examples must already be truncated to ``max_length``."""
    rows: list[PackedRow] = []
    row = PackedRow()
    for example in examples:
        n = len(example.input_ids)
        if n > max_length:
            raise CurationError(f"an example of {n} tokens exceeds the packing length {max_length}")
        if row.lengths and len(row.input_ids) + n > max_length:
            rows.append(row)
            row = PackedRow()
        row.input_ids.extend(example.input_ids)
        row.labels.extend(example.labels)
        row.position_ids.extend(range(n))
        row.lengths.append(n)
    if row.lengths:
        rows.append(row)
    return rows


def length_stats(lengths: list[int], unit: str = "tokens") -> dict[str, Any]:
    """Mean, median, 95th percentile and max of ``lengths``."""
    if not lengths:
        return {"unit": unit, "count": 0}
    ordered = sorted(lengths)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"unit": unit, "count": len(ordered), "mean": round(statistics.fmean(ordered), 1),
            "median": statistics.median(ordered), "p95": p95, "max": ordered[-1],
            "min": ordered[0]}
