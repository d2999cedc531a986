"""``loraforge db``, ``loraforge adapters`` and ``loraforge hub`` command groups."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from registry import db
from registry.models import Adapter

console = Console()

db_app = typer.Typer(
    help="Create and migrate the store (SQLite by default, PostgreSQL by URL).",
    no_args_is_help=True,
)
adapters_app = typer.Typer(help="List the adapters in the registry.", no_args_is_help=True)
hub_app = typer.Typer(help="Push adapters to and pull them from the Hugging Face Hub.",
                      no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade(
    revision: str = typer.Argument("head", help="Alembic revision to migrate to."),
) -> None:
    """Create or migrate the store to REVISION (default: the newest)."""
    db.upgrade(revision=revision)
    url = db.get_engine().url.render_as_string(hide_password=True)
    console.print(f"store at {url} is at revision {db.current_revision()}")


@db_app.command("current")
def db_current() -> None:
    """Print the store's URL and migration revision."""
    url = db.get_engine().url.render_as_string(hide_password=True)
    revision = db.current_revision() or "(none: run `loraforge db upgrade`)"
    console.print(f"{url}: revision {revision}")


@adapters_app.command("list")
def adapters_list() -> None:
    """A table of adapters with their key metrics."""
    db.ensure_schema()
    table = Table("id", "adapter", "method", "base", "trainable", "final loss", "path")
    with db.session_scope() as session:
        for adapter in session.scalars(select(Adapter).order_by(Adapter.id)):
            m = adapter.metrics or {}
            table.add_row(
                str(adapter.id), adapter.label, adapter.method, adapter.base_model.name,
                f"{m.get('trainable_params', '-')}",
                f"{m['final_loss']:.3f}" if "final_loss" in m else "-",
                adapter.path,
            )
    console.print(table)
