"""Records are read from the ORM's columns by name: the models are the one definition."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import select

from registry import models
from registry.adapters import AdapterRecord, RunRecord
from registry.article_store import CrawlRunSummary
from registry.bases import BaseRecord, find_base
from registry.db import session_scope
from registry.lineage import CrawlRunLineage, RunLineage, SnapshotLineage
from registry.records import columns_of, record_of
from registry.snapshots import SnapshotRecord

# What each record carries that is not a column of its model: passed in by its reader.
DERIVED = {
    (AdapterRecord, models.Adapter): {"label", "base_name", "base_path", "snapshot_name"},
    (RunRecord, models.TrainingRun): {"base_name", "snapshot_name"},
    (BaseRecord, models.BaseModel): set(),
    (SnapshotRecord, models.DatasetSnapshot): set(),
    (CrawlRunSummary, models.CrawlRun): {"qa_pairs"},
    (RunLineage, models.TrainingRun): set(),
    (SnapshotLineage, models.DatasetSnapshot): {"split_sizes"},
    (CrawlRunLineage, models.CrawlRun): {"source"},
}


@pytest.mark.parametrize(("record", "model"), list(DERIVED))
def test_every_record_field_is_a_column_of_its_model_or_a_known_derived_value(record, model):
    fields = {f.name for f in dataclasses.fields(record)}
    assert fields - columns_of(model) == DERIVED[(record, model)]


def test_a_record_copies_columns_enums_as_values_and_json_as_copies(home):
    with session_scope() as session:
        session.add(models.BaseModel(name="b", source="src", path=None, config={"a": 1},
                                     kind=models.ModelKind.masked_diffusion))
    base = find_base("b")
    assert base is not None
    assert (base.name, base.source, base.kind, base.config) == ("b", "src", "masked_diffusion",
                                                               {"a": 1})
    with session_scope() as session:
        row = session.get(models.BaseModel, base.id)
        record = record_of(BaseRecord, row)
        record.config["a"] = 2
        assert row.config == {"a": 1}


def test_a_field_that_is_neither_a_column_nor_passed_is_an_error_naming_it(home):
    @dataclass(frozen=True)
    class Stale:
        id: int
        old_name: str
        extra: Any = None

    with session_scope() as session:
        session.add(models.BaseModel(name="b", source="src", config={}))
        session.flush()
        base = session.scalars(select(models.BaseModel)).one()
        with pytest.raises(TypeError, match="Stale.old_name is not a column of BaseModel"):
            record_of(Stale, base, extra=1)
        assert record_of(Stale, base, old_name="x", extra=1).old_name == "x"
