"""The ``loraforge`` console script. Each command group lives with its component."""

from __future__ import annotations

import logging
import sys

# bitsandbytes tries to fetch an optional CPU kernel from the Hub when it is first imported
# (by peft/transformers, below) and warns when it can't; its built-in fallback is what we use,
# so the warning is only noise, and it would be a second line under every one-line error.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

import typer

from crawlers.cli import crawl_app, demo_site_app
from loraforge.demo import demo_command
from registry.cli import adapters_app, db_app, hub_app
from registry.errors import LoraForgeError
from trainers.cli import base_app, data_app, train_app, trainers_app
from trainers.eval_cli import eval_command
from trainers.plugin_scaffold import plugin_app
from ui.cli import ui_command

app = typer.Typer(
    name="loraforge",
    help="From crawled web articles to a fine-tuned, published, chat-ready LLM adapter.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(db_app, name="db")
app.add_typer(crawl_app, name="crawl")
app.add_typer(demo_site_app, name="demo-site")
app.add_typer(data_app, name="data")
app.add_typer(base_app, name="base")
app.add_typer(train_app, name="train")
app.add_typer(trainers_app, name="trainers")
app.add_typer(plugin_app, name="plugin")
app.add_typer(adapters_app, name="adapters")
app.add_typer(hub_app, name="hub")
app.command("eval")(eval_command)
app.command("ui")(ui_command)
app.command("demo")(demo_command)

_debug = False


@app.callback()
def main(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    global _debug
    _debug = debug


def run() -> None:
    """Entry point: Typer handles usage errors; ours become one red line and exit code 1."""
    # bitsandbytes tries to fetch an optional CPU kernel from the Hub on import and warns when
    # it can't; its built-in fallback is what we use, so the warning is only noise.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    try:
        app()
    except LoraForgeError as exc:
        if _debug:
            raise
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(1)
