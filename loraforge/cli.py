"""The ``loraforge`` console script. Each command group lives with its component."""

from __future__ import annotations

import logging
import signal
import sys
import warnings
from typing import NoReturn

# bitsandbytes tries to fetch an optional CPU kernel from the Hub when it is first imported
# (by peft/transformers, below) and warns when it can't; its built-in fallback is what we use,
# so the warning is only noise, and it would be a second line under every one-line error.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
# The same fetch goes through the `kernels` package when it is installed; offline (our tests,
# and users without Hub access) it warns that it skipped the publisher check of a kernel it
# then does not load. Another line under every one-line error, so it is filtered too.
# (Its versions say it through logging or through warnings.)
logging.getLogger("kernels").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", message=r"Skipping publisher trust check")
# Deprecations that transformers raises at peft's calls are for those libraries' authors; a
# user of the CLI can do nothing about them.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\.")

import typer
from sqlalchemy.exc import DBAPIError

from core import jobs
from core.errors import LoraForgeError
from crawlers.cli import crawl_app, demo_site_app
from curation.cli import data_app
from loraforge.demo import demo_command
from publishing.cli import export_command, hub_app, merge_command
from registry.cli import adapters_app, db_app
from serving.cli import serve_command
from trainers.cli import base_app, train_app, trainers_app
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
adapters_app.command("merge")(merge_command)
adapters_app.command("export")(export_command)
app.add_typer(adapters_app, name="adapters")
app.add_typer(hub_app, name="hub")
app.command("eval")(eval_command)
app.command("ui")(ui_command)
app.command("serve")(serve_command)
app.command("demo")(demo_command)

_debug = False


@app.callback()
def main(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    global _debug
    _debug = debug


def _fail(message: str, code: int = 1) -> NoReturn:
    """One red line, the same message to a parent job (core.jobs), and the exit code."""
    jobs.emit_result("failed", error=message)
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    sys.exit(code)


def run() -> None:
    """Entry point: every error, ours or a usage error, is one red line and a non-zero exit.

    Typer's usage errors would be a multi-line box; a script or a log wants one line that
    names what is wrong and where the help is. Usage errors exit 2, as click's do.
    """
    # bitsandbytes tries to fetch an optional CPU kernel from the Hub on import and warns when
    # it can't; its built-in fallback is what we use, so the warning is only noise.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    # Ctrl-C and a job's Cancel (core.jobs sends SIGINT) must stop a command, which then saves
    # what it can. A process started in the background by a non-interactive shell (a CI script,
    # `loraforge ui &`) inherits SIGINT ignored, and Python then never raises KeyboardInterrupt,
    # so a cancelled training would run on to its end (tests/test_cli.py shows the ignoring).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        code = app(standalone_mode=False)
    except typer.Abort:
        _fail("interrupted", 130)
    except typer.TyperException as exc:  # Typer's own click: usage and bad-parameter errors
        if type(exc).__name__ == "NoArgsIsHelpError":  # a bare group: its help, as Typer does
            typer.echo(exc.ctx.get_help(), err=True)  # type: ignore[attr-defined]
            sys.exit(2)
        ctx = getattr(exc, "ctx", None)
        where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        message = " ".join(exc.format_message().split())  # type: ignore[attr-defined]
        _fail(f"{message}{where}", getattr(exc, "exit_code", 2))
    except LoraForgeError as exc:
        if _debug:
            raise
        _fail(str(exc))
    except DBAPIError as exc:  # the store itself: a full disk, a lost server, a locked file
        if _debug:
            raise
        from sqlalchemy.engine import make_url

        from core.settings import get_settings

        store = make_url(get_settings().resolved_database_url).render_as_string(
            hide_password=True)  # a PostgreSQL URL may carry one
        cause = " ".join(str(exc.orig or exc).split())
        _fail(f"the store at {store} failed ({cause}); check the free disk space and that the "
              "database is reachable (--debug shows where)")
    except OSError as exc:  # a full disk, a file where a folder should be, no permission
        if _debug:
            raise
        where = f" ({exc.filename})" if exc.filename else ""
        _fail(f"{exc.strerror or exc}{where}; check the path, its permissions and the free "
              "disk space (--debug shows where)")
    # Without standalone mode click returns the exit code of --help, typer.Exit and the like.
    sys.exit(code if isinstance(code, int) else 0)
