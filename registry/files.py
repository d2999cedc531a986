"""Directories that appear whole or not at all."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def build_dir(final_dir: Path) -> Iterator[Path]:
    """Yield a hidden temp folder beside ``final_dir``; rename it into place on success.

    A failure (or a kill) leaves nothing at ``final_dir``, so a half-written model is never
    mistaken for a whole one. Files already at ``final_dir`` are replaced: they belong to a
    record that no longer exists, since callers check the store first.
    """
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{final_dir.name}-", dir=final_dir.parent))
    try:
        yield tmp_dir
        if final_dir.exists():
            shutil.rmtree(final_dir)
        tmp_dir.rename(final_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
