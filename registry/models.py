"""SQLAlchemy 2.0 models of the store: crawl → articles/QA → snapshots → runs → adapters → Hub.

Constraints (unique keys, foreign keys, NOT NULL, enum checks, non-negative counts) live
here so that a bad state cannot be stored whatever code writes it.
"""

from __future__ import annotations

import enum
from datetime import datetime, timezone
from typing import Annotated, Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


intpk = Annotated[int, mapped_column(Integer, primary_key=True)]
created_at = Annotated[datetime, mapped_column(DateTime(timezone=True), default=utcnow)]
json_dict = Annotated[dict[str, Any], mapped_column(JSON, default=dict)]


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    # Stored as VARCHAR + CHECK on every backend so migrations stay portable.
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=32,
        values_callable=lambda members: [m.value for m in members],
    )


class CrawlStatus(str, enum.Enum):
    running = "running"
    finished = "finished"
    failed = "failed"
    interrupted = "interrupted"


class Split(str, enum.Enum):
    train = "train"
    validation = "validation"
    test = "test"


class ModelKind(str, enum.Enum):
    causal = "causal"
    masked_diffusion = "masked_diffusion"


class RunStatus(str, enum.Enum):
    pending = "pending"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"


class Source(Base):
    __tablename__ = "sources"

    id: Mapped[intpk]
    name: Mapped[str] = mapped_column(String(200), unique=True)
    base_url: Mapped[str | None] = mapped_column(String(2000))
    created_at: Mapped[created_at]

    articles: Mapped[list[Article]] = relationship(back_populates="source")

    def __repr__(self) -> str:
        return f"Source({self.name!r})"


class CrawlRun(Base):
    __tablename__ = "crawl_runs"
    __table_args__ = (
        CheckConstraint(
            "pages_seen >= 0 AND items_stored >= 0 AND items_updated >= 0 "
            "AND items_unchanged >= 0 AND items_dropped >= 0",
            name="counts_non_negative",
        ),
    )

    id: Mapped[intpk]
    spider: Mapped[str] = mapped_column(String(100))
    source_id: Mapped[int | None] = mapped_column(ForeignKey("sources.id", ondelete="SET NULL"))
    status: Mapped[CrawlStatus] = mapped_column(
        _enum(CrawlStatus, "crawl_status"), default=CrawlStatus.running
    )
    args: Mapped[json_dict]
    pages_seen: Mapped[int] = mapped_column(default=0)
    items_stored: Mapped[int] = mapped_column(default=0)
    items_updated: Mapped[int] = mapped_column(default=0)
    items_unchanged: Mapped[int] = mapped_column(default=0)
    items_dropped: Mapped[int] = mapped_column(default=0)
    drop_reasons: Mapped[json_dict]
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[created_at]
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    source: Mapped[Source | None] = relationship()

    def __repr__(self) -> str:
        return f"CrawlRun(#{self.id} {self.spider} {self.status.value})"


class Article(Base):
    __tablename__ = "articles"

    id: Mapped[intpk]
    url: Mapped[str] = mapped_column(String(2000), unique=True)
    source_id: Mapped[int | None] = mapped_column(ForeignKey("sources.id", ondelete="SET NULL"))
    crawl_run_id: Mapped[int | None] = mapped_column(
        ForeignKey("crawl_runs.id", ondelete="SET NULL")
    )
    title: Mapped[str] = mapped_column(String(1000))
    text: Mapped[str] = mapped_column(Text)
    topic: Mapped[str | None] = mapped_column(String(100), index=True)
    language: Mapped[str | None] = mapped_column(String(16))
    author: Mapped[str | None] = mapped_column(String(500))
    published: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    content_hash: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[created_at]
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )

    source: Mapped[Source | None] = relationship(back_populates="articles")
    qa_pairs: Mapped[list[QAPair]] = relationship(back_populates="article")

    def __repr__(self) -> str:
        return f"Article(#{self.id} {self.url!r})"


class QAPair(Base):
    """One question/answer pair with the study's columns (question, answer, source, focus_area)."""

    __tablename__ = "qa_pairs"

    id: Mapped[intpk]
    article_id: Mapped[int | None] = mapped_column(
        ForeignKey("articles.id", ondelete="CASCADE"), index=True
    )
    crawl_run_id: Mapped[int | None] = mapped_column(
        ForeignKey("crawl_runs.id", ondelete="SET NULL")
    )
    question: Mapped[str] = mapped_column(Text)
    answer: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(2000))
    focus_area: Mapped[str | None] = mapped_column(String(500), index=True)
    qtype: Mapped[str | None] = mapped_column(String(100))
    topic: Mapped[str | None] = mapped_column(String(100))
    content_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[created_at]

    article: Mapped[Article | None] = relationship(back_populates="qa_pairs")

    def __repr__(self) -> str:
        return f"QAPair(#{self.id} {self.question[:40]!r})"


class DatasetSnapshot(Base):
    __tablename__ = "dataset_snapshots"

    id: Mapped[intpk]
    name: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(50))
    params: Mapped[json_dict]
    seed: Mapped[int] = mapped_column(default=0)
    content_hash: Mapped[str] = mapped_column(String(64), index=True)
    counts: Mapped[json_dict]
    token_stats: Mapped[json_dict]
    path: Mapped[str | None] = mapped_column(String(2000))
    created_at: Mapped[created_at]

    members: Mapped[list[DatasetMember]] = relationship(
        back_populates="snapshot", cascade="all, delete-orphan"
    )

    def __repr__(self) -> str:
        return f"DatasetSnapshot({self.name!r})"


class DatasetMember(Base):
    __tablename__ = "dataset_members"
    __table_args__ = (
        UniqueConstraint("snapshot_id", "qa_pair_id"),
        UniqueConstraint("snapshot_id", "article_id"),
        CheckConstraint(
            "qa_pair_id IS NOT NULL OR article_id IS NOT NULL", name="member_has_origin"
        ),
        Index("ix_dataset_members_snapshot_split", "snapshot_id", "split"),
    )

    id: Mapped[intpk]
    snapshot_id: Mapped[int] = mapped_column(
        ForeignKey("dataset_snapshots.id", ondelete="CASCADE")
    )
    qa_pair_id: Mapped[int | None] = mapped_column(ForeignKey("qa_pairs.id", ondelete="RESTRICT"))
    article_id: Mapped[int | None] = mapped_column(ForeignKey("articles.id", ondelete="RESTRICT"))
    split: Mapped[Split] = mapped_column(_enum(Split, "split"))

    snapshot: Mapped[DatasetSnapshot] = relationship(back_populates="members")
    qa_pair: Mapped[QAPair | None] = relationship()
    article: Mapped[Article | None] = relationship()


class BaseModel(Base):
    __tablename__ = "base_models"

    id: Mapped[intpk]
    name: Mapped[str] = mapped_column(String(200), unique=True)
    source: Mapped[str] = mapped_column(String(2000))
    path: Mapped[str | None] = mapped_column(String(2000))
    kind: Mapped[ModelKind] = mapped_column(
        _enum(ModelKind, "model_kind"), default=ModelKind.causal
    )
    architecture: Mapped[str | None] = mapped_column(String(200))
    parameters: Mapped[int | None]
    config: Mapped[json_dict]
    created_at: Mapped[created_at]

    def __repr__(self) -> str:
        return f"BaseModel({self.name!r})"


class TrainingRun(Base):
    __tablename__ = "training_runs"

    id: Mapped[intpk]
    method: Mapped[str] = mapped_column(String(100))
    base_model_id: Mapped[int] = mapped_column(ForeignKey("base_models.id", ondelete="RESTRICT"))
    snapshot_id: Mapped[int] = mapped_column(
        ForeignKey("dataset_snapshots.id", ondelete="RESTRICT")
    )
    config: Mapped[json_dict]
    status: Mapped[RunStatus] = mapped_column(
        _enum(RunStatus, "run_status"), default=RunStatus.pending
    )
    metrics: Mapped[json_dict]
    loss_curve: Mapped[list[dict[str, float]]] = mapped_column(JSON, default=list)
    error: Mapped[str | None] = mapped_column(Text)
    output_dir: Mapped[str | None] = mapped_column(String(2000))
    started_at: Mapped[created_at]
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    base_model: Mapped[BaseModel] = relationship()
    snapshot: Mapped[DatasetSnapshot] = relationship()

    def __repr__(self) -> str:
        return f"TrainingRun(#{self.id} {self.method} {self.status.value})"


class Adapter(Base):
    __tablename__ = "adapters"
    __table_args__ = (
        UniqueConstraint("name", "version"),
        CheckConstraint("version >= 1", name="version_positive"),
    )

    id: Mapped[intpk]
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(default=1)
    path: Mapped[str] = mapped_column(String(2000))
    method: Mapped[str] = mapped_column(String(100))
    base_model_id: Mapped[int] = mapped_column(ForeignKey("base_models.id", ondelete="RESTRICT"))
    training_run_id: Mapped[int | None] = mapped_column(
        ForeignKey("training_runs.id", ondelete="SET NULL"), unique=True
    )
    snapshot_id: Mapped[int | None] = mapped_column(
        ForeignKey("dataset_snapshots.id", ondelete="RESTRICT")
    )
    metrics: Mapped[json_dict]
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    source_repo: Mapped[str | None] = mapped_column(String(300))
    source_revision: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[created_at]

    base_model: Mapped[BaseModel] = relationship()
    training_run: Mapped[TrainingRun | None] = relationship()
    snapshot: Mapped[DatasetSnapshot | None] = relationship()
    publications: Mapped[list[HubPublication]] = relationship(
        back_populates="adapter", cascade="all, delete-orphan"
    )
    exports: Mapped[list[AdapterExport]] = relationship(
        back_populates="adapter", cascade="all, delete-orphan"
    )

    @property
    def label(self) -> str:
        return f"{self.name}:v{self.version}"

    def __repr__(self) -> str:
        return f"Adapter({self.label!r} {self.method})"


class HubPublication(Base):
    __tablename__ = "hub_publications"

    id: Mapped[intpk]
    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapters.id", ondelete="CASCADE"))
    repo_id: Mapped[str] = mapped_column(String(300))
    revision: Mapped[str] = mapped_column(String(200), default="main")
    commit_sha: Mapped[str | None] = mapped_column(String(64))
    url: Mapped[str | None] = mapped_column(String(2000))
    private: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[created_at]

    adapter: Mapped[Adapter] = relationship(back_populates="publications")


class AdapterExport(Base):
    """One file an adapter was exported to (a merged GGUF, or a LoRA GGUF for llama.cpp)."""

    __tablename__ = "adapter_exports"
    __table_args__ = (CheckConstraint("size_bytes >= 0", name="size_non_negative"),)

    id: Mapped[intpk]
    adapter_id: Mapped[int] = mapped_column(
        ForeignKey("adapters.id", ondelete="CASCADE"), index=True
    )
    format: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(16))  # merged | lora
    quantization: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(String(2000))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    details: Mapped[json_dict]
    created_at: Mapped[created_at]

    adapter: Mapped[Adapter] = relationship(back_populates="exports")

    def __repr__(self) -> str:
        return f"AdapterExport(#{self.id} {self.format} {self.kind} {self.quantization})"


class Evaluation(Base):
    """One model answering one snapshot split: the base alone (no adapter) or base + adapter.

    Rows of one ``loraforge eval`` call share ``batch_id``, so a report always compares
    answers made with the same prompts, token budget and code.
    """

    __tablename__ = "evaluations"
    __table_args__ = (
        CheckConstraint("examples_count >= 0", name="examples_non_negative"),
    )

    id: Mapped[intpk]
    batch_id: Mapped[str] = mapped_column(String(64), index=True)
    base_model_id: Mapped[int] = mapped_column(ForeignKey("base_models.id", ondelete="RESTRICT"))
    adapter_id: Mapped[int | None] = mapped_column(
        ForeignKey("adapters.id", ondelete="CASCADE"), index=True
    )
    snapshot_id: Mapped[int] = mapped_column(
        ForeignKey("dataset_snapshots.id", ondelete="RESTRICT")
    )
    split: Mapped[Split] = mapped_column(_enum(Split, "split"))
    examples_count: Mapped[int] = mapped_column(default=0)
    settings: Mapped[json_dict]
    metrics: Mapped[json_dict]
    examples: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_at: Mapped[created_at]

    base_model: Mapped[BaseModel] = relationship()
    adapter: Mapped[Adapter | None] = relationship()
    snapshot: Mapped[DatasetSnapshot] = relationship()

    def __repr__(self) -> str:
        return f"Evaluation(#{self.id} adapter={self.adapter_id} split={self.split.value})"
