"""Plain, frozen records of ORM rows, for code outside a session.

The ORM models (registry/models.py) are the one place a column is defined. A record only
chooses which columns it carries, by naming fields after them; ``record_of`` copies those
from the row, and the few fields that are not columns (a related row's name, a count) must be
passed in. A field that is neither is an error at once, so a renamed column cannot leave a
record silently holding stale data.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, TypeVar

from sqlalchemy import inspect

R = TypeVar("R")


def columns_of(model: type) -> set[str]:
    """The attribute names of a model's columns."""
    return {attr.key for attr in inspect(model).column_attrs}


def record_of(record_class: type[R], row: Any, **derived: Any) -> R:
    """``record_class`` filled from ``row``'s columns of the same names (an enum as its value,
    JSON copied so the record never shares the row's objects) and from ``derived``."""
    columns = columns_of(type(row))
    values: dict[str, Any] = {}
    for spec in dataclasses.fields(record_class):  # type: ignore[arg-type]
        if spec.name in derived:
            values[spec.name] = derived[spec.name]
            continue
        if spec.name not in columns:
            raise TypeError(f"{record_class.__name__}.{spec.name} is not a column of "
                            f"{type(row).__name__}; pass it to record_of")
        value = getattr(row, spec.name)
        if isinstance(value, enum.Enum):
            value = value.value
        elif isinstance(value, dict | list):
            value = type(value)(value)
        elif value is None and str(spec.type).startswith(("dict", "list")):
            value = {} if str(spec.type).startswith("dict") else []  # a JSON null
        values[spec.name] = value
    return record_class(**values)
