"""The export tests reuse the chat UI's tiny real Llama and its two LoRA adapters."""

from tests.ui.conftest import chat_store, tiny_model_files  # noqa: F401 (fixtures)
