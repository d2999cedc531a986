"""Publishing tests reuse the chat UI's tiny real Llama with its two LoRA adapters, and the
registry tests' store with full lineage and local Hub server."""

from tests.registry.conftest import (  # noqa: F401 (fixtures)
    dead_endpoint,
    lineage_store,
    local_hub,
)
from tests.ui.conftest import chat_store, tiny_model_files  # noqa: F401 (fixtures)
