"""The engine is tested on the chat UI's tiny real Llama and its two LoRA adapters; the API on a
free loopback port in this process."""

import threading
import time
from collections.abc import Iterator

import pytest

from serving.engine import ChatEngine
from tests.ui.conftest import chat_store, engine, free_port, tiny_model_files  # noqa: F401

KEY = "sk-test-loraforge"


@pytest.fixture
def api(engine: ChatEngine) -> Iterator[tuple[ChatEngine, str]]:  # noqa: F811
    """The API on a free loopback port, in this process, with a key: (engine, base URL)."""
    import uvicorn

    from serving.openai_api import build_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(build_app(engine, KEY), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    try:
        yield engine, f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
