"""Base models in the store: the models adapters are trained on, and the text to pretrain one."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from registry.db import session_scope
from registry.models import Article, BaseModel, ModelKind, QAPair
from registry.records import record_of
from registry.snapshots import qa_pair_order


@dataclass(frozen=True)
class BaseRecord:
    id: int
    name: str
    source: str
    path: str | None
    kind: str
    architecture: str | None
    parameters: int | None
    config: dict[str, Any]

    @property
    def model_path(self) -> str:
        """What ``from_pretrained`` should load: the local copy if there is one, else the source."""
        return self.path or self.source


def _record(row: BaseModel) -> BaseRecord:
    return record_of(BaseRecord, row)


def iter_store_texts(batch_size: int = 500) -> Iterator[str]:
    """Every QA pair as "question\\nanswer", then every article's title and text.

    In the same order as snapshots select them (by page URL), so a base built from two crawls of
    the same pages is the same base whatever order the pages arrived in.
    """
    with session_scope() as session:
        pairs = (select(QAPair).outerjoin(Article, QAPair.article_id == Article.id)
                 .order_by(*qa_pair_order()))
        for qa in session.scalars(pairs.execution_options(yield_per=batch_size)):
            yield f"{qa.question}\n{qa.answer}"
        for article in session.scalars(select(Article).order_by(Article.url).execution_options(
                yield_per=batch_size)):
            yield f"{article.title}\n{article.text}"


def record_base(
    *,
    name: str,
    source: str,
    path: str | None,
    architecture: str | None,
    parameters: int | None,
    config: dict[str, Any],
    kind: ModelKind = ModelKind.causal,
) -> int:
    """Add a base model row; returns its id."""
    with session_scope() as session:
        row = BaseModel(
            name=name, source=source, path=path, kind=kind, architecture=architecture,
            parameters=parameters, config=config,
        )
        session.add(row)
        session.flush()
        return row.id


def find_base(name: str) -> BaseRecord | None:
    with session_scope() as session:
        row = session.scalars(select(BaseModel).where(BaseModel.name == name)).first()
        return _record(row) if row is not None else None


def list_bases() -> list[BaseRecord]:
    with session_scope() as session:
        return [_record(r) for r in session.scalars(select(BaseModel).order_by(BaseModel.id))]


def count_bases() -> int:
    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(BaseModel)) or 0
