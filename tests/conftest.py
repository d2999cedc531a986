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


# Files whose fixtures and tests take minutes (the slowest in `make test`'s --durations list),
# slowest first. xdist hands out whole files (--dist loadfile); run first, each of these runs
# beside the many short files instead of leaving one worker alone with it at the end, which
# xdist's own order (files with the most tests first) did. Paths are from the repository root.
SLOW_FILES_FIRST = (
    "tests/trainers/test_real_base.py",
    "tests/test_end_to_end.py",
    "tests/trainers/test_masked_diffusion.py",
    "tests/trainers/test_launch.py",
    "tests/trainers/test_train_cli.py",
    "tests/trainers/test_lora_run.py",
    "tests/ui/test_tabs.py",
    "tests/trainers/test_kill_and_rerun.py",
    "tests/test_concurrent_store.py",
    "tests/trainers/test_adapter_quality.py",
    "tests/trainers/test_compare.py",
    "tests/test_installed_wheel.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    missing = [p for p in SLOW_FILES_FIRST if not (config.rootpath / p).is_file()]
    if missing:  # a renamed file would silently lose its place
        raise pytest.UsageError(f"SLOW_FILES_FIRST names missing files: {', '.join(missing)}")
    rank = {path: i for i, path in enumerate(SLOW_FILES_FIRST)}
    # A stable sort: within a file, and among the other files, the order stays as collected.
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))
