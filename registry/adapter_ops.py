"""Operations on registered adapters: show, compare, tag and delete (merging and exports are in
``publishing``).

Adapters are addressed as in ``registry.adapters.get_adapter``: an id, ``name:vN`` or a name
(meaning its newest version).
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from core.settings import get_settings
from registry.adapter_files import read_adapter_config
from registry.adapters import get_adapter
from registry.db import session_scope
from registry.errors import RegistryError
from registry.models import Adapter

TAG_MAX_LENGTH = 64


@dataclass(frozen=True)
class PublicationRecord:
    repo_id: str
    revision: str
    commit_sha: str | None
    url: str | None
    private: bool
    created_at: datetime | None


@dataclass(frozen=True)
class AdapterDetail:
    """Everything the registry knows about one adapter."""

    id: int
    label: str
    name: str
    version: int
    method: str
    path: str
    base_name: str
    base_source: str
    base_path: str | None
    training_run_id: int | None
    snapshot_name: str | None
    metrics: dict[str, Any]
    tags: list[str]
    source_repo: str | None
    source_revision: str | None
    created_at: datetime | None
    files: list[str] = field(default_factory=list)
    lora_config: dict[str, Any] = field(default_factory=dict)
    publications: list[PublicationRecord] = field(default_factory=list)


def _lora_config(path: Path, label: str) -> dict[str, Any]:
    if not path.is_dir():
        return {}  # show still lists the record; the files column says the folder is empty
    config = read_adapter_config(path, f"adapter {label}")
    keys = ("peft_type", "task_type", "r", "lora_alpha", "lora_dropout", "target_modules",
            "base_model_name_or_path")
    return {k: config[k] for k in keys if k in config}


def show_adapter(label_or_id: str | int) -> AdapterDetail:
    adapter_id = get_adapter(label_or_id).id
    with session_scope() as session:
        row = session.get(Adapter, adapter_id)
        assert row is not None
        path = Path(row.path)
        return AdapterDetail(
            id=row.id, label=row.label, name=row.name, version=row.version, method=row.method,
            path=row.path, base_name=row.base_model.name, base_source=row.base_model.source,
            base_path=row.base_model.path, training_run_id=row.training_run_id,
            snapshot_name=row.snapshot.name if row.snapshot is not None else None,
            metrics=dict(row.metrics or {}), tags=list(row.tags or []),
            source_repo=row.source_repo, source_revision=row.source_revision,
            created_at=row.created_at,
            files=sorted(p.name for p in path.iterdir()) if path.is_dir() else [],
            lora_config=_lora_config(path, row.label),
            publications=[
                PublicationRecord(p.repo_id, p.revision, p.commit_sha, p.url, p.private,
                                  p.created_at)
                for p in sorted(row.publications, key=lambda p: p.id)],
        )


def compare_adapters(labels: list[str]) -> list[AdapterDetail]:
    """Several adapters, in the order given, for a side-by-side view."""
    if len(labels) < 2:
        raise RegistryError("compare needs at least two adapters, e.g. `alpha:v1 beta:v1`")
    return [show_adapter(label) for label in labels]


def _check_tag(tag: str) -> str:
    tag = tag.strip()
    if not tag or len(tag) > TAG_MAX_LENGTH or any(c.isspace() or c == "," for c in tag):
        raise RegistryError(
            f"bad tag {tag!r}: use 1-{TAG_MAX_LENGTH} characters without spaces or commas")
    return tag


def tag_adapter(
    label_or_id: str | int, *, add: Sequence[str] = (), remove: Sequence[str] = ()
) -> list[str]:
    """Add and remove tags in one transaction; returns the adapter's tags afterwards."""
    add_tags = [_check_tag(t) for t in add]
    remove_tags = [_check_tag(t) for t in remove]
    adapter_id = get_adapter(label_or_id).id
    with session_scope() as session:
        row = session.get(Adapter, adapter_id)
        assert row is not None
        missing = [t for t in remove_tags if t not in (row.tags or [])]
        if missing:
            raise RegistryError(f"{row.label} has no tag {missing[0]!r}; its tags: "
                                f"{', '.join(row.tags or []) or '(none)'}")
        tags = [t for t in (row.tags or []) if t not in remove_tags]
        tags += [t for t in dict.fromkeys(add_tags) if t not in tags]
        row.tags = tags
        return list(tags)


def _owned_by_store(path: Path) -> bool:
    """Only files under LORAFORGE_HOME are ours to delete; an adapter registered from
    elsewhere keeps its files."""
    home = get_settings().home.resolve()
    try:
        path.resolve().relative_to(home)
    except ValueError:
        return False
    return True


def delete_adapter(label_or_id: str | int) -> tuple[str, bool]:
    """Delete the row and its files together; returns (label, whether files were removed).

    The directory is first moved aside, then the row deleted; if the database refuses, the
    directory is moved back, so the store never lists an adapter whose files are gone.
    """
    adapter_id = get_adapter(label_or_id).id
    with session_scope() as session:
        row = session.get(Adapter, adapter_id)
        assert row is not None
        label, path = row.label, Path(row.path)
        remove_files = path.exists() and _owned_by_store(path)
        trash = path.with_name(f".{path.name}.deleting-{uuid.uuid4().hex[:8]}")
        if remove_files:
            path.rename(trash)
        try:
            session.delete(row)
            session.flush()
        except BaseException:
            if remove_files:
                trash.rename(path)
            raise
    if remove_files:
        shutil.rmtree(trash, ignore_errors=True)
    return label, remove_files
