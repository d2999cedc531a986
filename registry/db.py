"""Engines, sessions and migrations. Every other package reaches the database through here."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from core.settings import get_settings
from registry.errors import StoreError

# An installed wheel carries the migrations as registry/alembic (see setup.py); a checkout has
# them in the repo's top-level alembic/, where alembic.ini finds them too.
_PACKAGED_ALEMBIC = Path(__file__).resolve().parent / "alembic"
ALEMBIC_DIR = _PACKAGED_ALEMBIC if _PACKAGED_ALEMBIC.is_dir() \
    else Path(__file__).resolve().parent.parent / "alembic"


# Seconds a SQLite writer waits for another process's write to finish before giving up.
SQLITE_BUSY_SECONDS = 60


def _configure_sqlite(dbapi_connection, _record) -> None:
    # SQLite ignores FOREIGN KEY clauses unless each connection turns them on. WAL lets
    # readers (the chat app, a snapshot build) go on while a crawl writes. The driver's own
    # transaction handling is switched off so that _begin_immediate below decides it.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_SECONDS * 1000}")
    if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() not in ("wal", "memory"):
        cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


def _begin_immediate(connection) -> None:
    # A deferred transaction that reads and then writes cannot wait for a lock another process
    # holds: SQLite answers "database is locked" at once. Taking the write lock at BEGIN makes
    # concurrent jobs queue (up to the busy timeout) instead of failing, and makes each
    # transaction's check-then-insert atomic.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


@lru_cache(maxsize=8)
def get_engine(url: str | None = None) -> Engine:
    url = url or get_settings().resolved_database_url
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(url, future=True, connect_args={"timeout": SQLITE_BUSY_SECONDS})
        event.listen(engine, "connect", _configure_sqlite)
        event.listen(engine, "begin", _begin_immediate)
    else:
        engine = create_engine(url, future=True)
    return engine


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A session that commits on success and rolls back (leaving the store unchanged) on error."""
    session = sessionmaker(get_engine(url), expire_on_commit=False)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def alembic_config(url: str | None = None):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(ALEMBIC_DIR))
    url = url or get_settings().resolved_database_url
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str | None = None, revision: str = "head") -> None:
    from alembic.util.exc import CommandError

    from alembic import command

    try:
        command.upgrade(alembic_config(url), revision)
    except CommandError as exc:  # an unknown revision, or one behind the store's
        raise StoreError(f"cannot upgrade to {revision!r}: {exc}; see `loraforge db current` "
                         "(revisions are under alembic/versions)") from exc


def downgrade(url: str | None = None, revision: str = "base") -> None:
    from alembic import command

    command.downgrade(alembic_config(url), revision)


def current_revision(url: str | None = None) -> str | None:
    """The store's migration revision, None before the first ``db upgrade``.

    Read with one query, not through alembic's MigrationContext: importing alembic took a
    third of a second, which every command and every crawl's opening paid (``ensure_schema``).
    """
    with get_engine(url).connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        versions = sorted(conn.execute(text("SELECT version_num FROM alembic_version")).scalars())
    return " ".join(versions) or None  # several rows: branches, which this store never has


def ensure_schema(url: str | None = None) -> None:
    """Fail with advice when the store has not been created or migrated."""
    engine = get_engine(url)
    if "alembic_version" not in inspect(engine).get_table_names():
        raise StoreError(
            f"the store at {engine.url.render_as_string(hide_password=True)} has no tables; "
            "run `loraforge db upgrade` first"
        )
    current = current_revision(url)
    if current != head_revision():
        raise StoreError(
            f"the store at {engine.url.render_as_string(hide_password=True)} is at revision "
            f"{current}, older than this LoRAForge ({head_revision()}); run `loraforge db upgrade`"
        )


# A migration file's header lines, as alembic's template writes them.
_REVISION_LINE = re.compile(
    r"^(?P<key>revision|down_revision)\s*(?::[^=\n]*)?=\s*(?P<value>None|'[^']*'|\"[^\"]*\")\s*$",
    re.MULTILINE)


@lru_cache(maxsize=1)
def head_revision() -> str | None:
    """The newest migration this code ships.

    Read from the migration files' ``revision`` and ``down_revision`` lines (see
    ``current_revision`` for why not through alembic). A history that is not one straight
    line, or a file written some other way, is left to alembic.
    """
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in sorted((ALEMBIC_DIR / "versions").glob("*.py")):
        found = {m["key"]: m["value"] for m in _REVISION_LINE.finditer(path.read_text())}
        if set(found) != {"revision", "down_revision"} or found["revision"] == "None":
            return alembic_head()
        revisions.add(found["revision"][1:-1])
        if found["down_revision"] != "None":
            parents.add(found["down_revision"][1:-1])
    heads = revisions - parents
    if len(heads) != 1 or not parents <= revisions:
        return alembic_head()
    return heads.pop()


def alembic_head() -> str | None:
    """The head as alembic computes it (slower to import; ``head_revision`` is checked
    against it in the tests)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
