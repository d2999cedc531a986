"""Files an adapter was exported to (GGUF for llama.cpp and Ollama), with size and SHA-256.

``loraforge adapters export`` records a row per file it writes; ``adapters show`` lists them
and ``hub push --gguf`` uploads the ones still on disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select

from registry.db import session_scope
from registry.models import AdapterExport


@dataclass(frozen=True)
class ExportRecord:
    id: int
    adapter_id: int
    format: str
    kind: str
    quantization: str
    path: str
    size_bytes: int
    sha256: str
    details: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None

    @property
    def on_disk(self) -> bool:
        return Path(self.path).is_file()


def _record(row: AdapterExport) -> ExportRecord:
    return ExportRecord(id=row.id, adapter_id=row.adapter_id, format=row.format, kind=row.kind,
                        quantization=row.quantization, path=row.path, size_bytes=row.size_bytes,
                        sha256=row.sha256, details=dict(row.details or {}),
                        created_at=row.created_at)


def record_export(*, adapter_id: int, format: str, kind: str, quantization: str, path: Path,
                  size_bytes: int, sha256: str, details: dict[str, Any]) -> int:
    """Record one exported file; a new export to the same path replaces the old row."""
    with session_scope() as session:
        session.execute(delete(AdapterExport).where(AdapterExport.path == str(path)))
        row = AdapterExport(adapter_id=adapter_id, format=format, kind=kind,
                            quantization=quantization, path=str(path), size_bytes=size_bytes,
                            sha256=sha256, details=details)
        session.add(row)
        session.flush()
        return row.id


def exports_for(adapter_id: int) -> list[ExportRecord]:
    with session_scope() as session:
        rows = session.scalars(select(AdapterExport).where(AdapterExport.adapter_id == adapter_id)
                               .order_by(AdapterExport.id))
        return [_record(r) for r in rows]
