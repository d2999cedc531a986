"""Directories and files that appear whole or not at all."""

from __future__ import annotations

import hashlib
import os
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


@contextmanager
def build_file(final_path: Path) -> Iterator[Path]:
    """Yield a hidden temp path beside ``final_path``; flush it to disk and rename it into place
    on success, so a killed or failed write never leaves a partial file under the final name."""
    final_path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{final_path.name}.partial-", dir=final_path.parent)
    os.close(handle)
    tmp_path = Path(name)
    try:
        yield tmp_path
        with tmp_path.open("rb+") as written:
            os.fsync(written.fileno())
        os.replace(tmp_path, final_path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) across processes on this host:
    the critical section of claiming a name and recording it, which two jobs may reach at once."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
