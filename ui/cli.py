"""``loraforge ui``: serve the chat app, on localhost unless told otherwise."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from core.device import DTYPE_HELP, ServeDtype
from serving.errors import ChatError
from serving.limits import (
    DEFAULT_MAX_ADAPTERS,
    DEFAULT_PREFIX_CACHE_MB,
    MERGE_HELP,
    PREFIX_CACHE_HELP,
)

if TYPE_CHECKING:  # gradio and the engine (torch) load when the app starts, not for --help
    import gradio as gr

    from serving.engine import ChatEngine


def _parse_auth(auth: str | None) -> tuple[str, str] | None:
    if auth is None:
        return None
    user, sep, password = auth.partition(":")
    if not sep or not user or not password:
        raise ChatError("--auth takes USER:PASS, with both parts non-empty")
    return user, password


def launch(
    host: str = "127.0.0.1",
    port: int = 7860,
    auth: str | None = None,
    share: bool = False,
    block: bool = True,
    engine: ChatEngine | None = None,
    base: str | None = None,
) -> tuple[gr.Blocks, str]:
    """Build and start the app; returns it with its local URL (after Ctrl-C when ``block``)."""
    from serving.engine import ChatEngine
    from ui.app import create_ui
    from ui.i18n import I18N

    credentials = _parse_auth(auth)
    engine = engine or ChatEngine(base=base)
    app = create_ui(engine)
    try:
        app.launch(
            server_name=host,
            server_port=port,
            auth=credentials,
            share=share,
            prevent_thread_lock=True,
            quiet=True,
            show_error=False,
            i18n=I18N,
        )
    except OSError as exc:  # Gradio's "Cannot find empty port": the port is taken
        raise ChatError(f"cannot open the chat app on {host}:{port} ({str(exc).split('.')[0]}); "
                        "pass --port with a free port, or stop what uses it") from exc
    url = app.local_url or f"http://{host}:{port}/"
    typer.echo(
        f"LoRAForge chat on {url}" + (f" (public: {app.share_url})" if app.share_url else "")
    )
    if block:
        typer.echo("Press Ctrl-C to stop.")
        try:
            app.block_thread()
        finally:
            app.close(verbose=False)
    return app, url


def ui_command(
    host: str = typer.Option(
        "127.0.0.1", help="Interface to bind; 0.0.0.0 exposes the app to your network."
    ),
    port: int = typer.Option(7860, min=1, max=65535, help="Port to listen on."),
    auth: str | None = typer.Option(
        None, help="Require a login, given as USER:PASS (recommended off localhost)."
    ),
    share: bool = typer.Option(False, help="Also open a public gradio.live link."),
    base: str | None = typer.Option(
        None,
        help="Registered base model to serve; default LORAFORGE_BASE_MODEL, else the "
        "base of the newest adapter.",
    ),
    load_4bit: bool = typer.Option(
        False, "--load-4bit", help="Load the base in 4-bit (bitsandbytes NF4; CUDA only)."
    ),
    max_adapters: int = typer.Option(
        DEFAULT_MAX_ADAPTERS,
        help="Adapters kept attached at once; the least recently used is dropped first.",
    ),
    prefix_cache_mb: int = typer.Option(DEFAULT_PREFIX_CACHE_MB, min=0,
                                        help=PREFIX_CACHE_HELP),
    merge: bool = typer.Option(True, "--merge/--no-merge", help=MERGE_HELP),
    dtype: Annotated[ServeDtype, typer.Option(help=DTYPE_HELP)] = ServeDtype.auto,
    diffusion_block_length: int = typer.Option(
        32, help="Masked-diffusion bases only: the sampler fills the answer in blocks of this "
        "many tokens, left to right, one token per step (LLaDA's semi-autoregressive mode)."
    ),
) -> None:
    """Start the chat app and serve it until Ctrl-C."""
    _parse_auth(auth)  # fail on a malformed --auth before the model loads
    if diffusion_block_length < 1:
        raise ChatError("--diffusion-block-length must be at least 1")
    from serving.engine import ChatEngine

    engine = ChatEngine(base=base, load_in_4bit=load_4bit, max_adapters=max_adapters,
                        diffusion_block_length=diffusion_block_length,
                        merge_lone_adapter=merge,
                        prefix_cache_mb=prefix_cache_mb, dtype=dtype.value)
    typer.echo(f"Loading base model {engine.base_name!r} on {engine.device}…")
    engine.load()
    launch(host=host, port=port, auth=auth, share=share, block=True, engine=engine)
