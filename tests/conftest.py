"""Fixtures that build tiny real things: a home, a migrated store, a PostgreSQL cluster."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.settings import get_settings
from registry import db
from tests.postgres_cluster import PostgresCluster, find_pg_bin, start_cluster

REPO_ROOT = Path(__file__).resolve().parent.parent
# The MedQuAD subset bundled with the demo site (CC BY 4.0, see its ATTRIBUTION.md): tests use
# only what a clone of the repository holds.
MEDQUAD_DIR = REPO_ROOT / "crawlers" / "demo_site" / "data" / "medquad"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def reset_caches() -> None:
    get_settings.cache_clear()
    db.get_engine.cache_clear()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh LORAFORGE_HOME with the default SQLite store, migrated to head."""
    home = tmp_path / "home"
    monkeypatch.setenv("LORAFORGE_HOME", str(home))
    monkeypatch.delenv("LORAFORGE_DATABASE_URL", raising=False)
    reset_caches()
    db.upgrade()
    yield home
    db.get_engine().dispose()
    reset_caches()


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    if find_pg_bin() is None:
        if os.environ.get("LORAFORGE_REQUIRE_POSTGRES"):
            pytest.fail("LORAFORGE_REQUIRE_POSTGRES is set but initdb/pg_ctl were not found")
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found; "
                    "install Debian's `postgresql` package to run these tests")
    cluster = start_cluster()
    assert cluster is not None
    yield cluster
    cluster.stop()


_db_counter = itertools.count()


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> str:
    """An empty database of its own on the session's PostgreSQL cluster."""
    return postgres_cluster.create_database(f"t{os.getpid()}_{next(_db_counter)}")


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch) -> Iterator[str]:
    """A migrated store on real SQLite and on real PostgreSQL, set as the default store."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    monkeypatch.setenv("LORAFORGE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LORAFORGE_DATABASE_URL", url)
    reset_caches()
    db.upgrade(url)
    yield url
    db.get_engine(url).dispose()
    reset_caches()
