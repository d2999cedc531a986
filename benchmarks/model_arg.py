"""``--model``: a model directory, or the name of a registered base with a local copy."""

from __future__ import annotations

from pathlib import Path


def resolve_model(model: str) -> Path:
    """``--model``'s directory: the path itself, else the local copy of a registered base."""
    path = Path(model).expanduser()
    if not path.exists():
        path = _registered_path(model) or path
    if not (path / "config.json").is_file():
        raise SystemExit(f"error: --model {model!r} is neither a model directory with config.json "
                         "nor a registered base with a local copy (see `loraforge base list`)")
    return path.resolve()


def _registered_path(name: str) -> Path | None:
    """The local copy of the base registered as ``name``; None if there is none, or no store."""
    from sqlalchemy.exc import SQLAlchemyError

    from core.settings import get_settings
    from registry.bases import find_base

    settings = get_settings()
    if settings.database_url is None and not (settings.home / "loraforge.db").is_file():
        return None  # no store yet, and looking would create an empty one
    try:
        record = find_base(name)
    except SQLAlchemyError:  # a store without its tables yet: nothing is registered
        return None
    return Path(record.path) if record and record.path else None
