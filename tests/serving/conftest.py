"""The engine is tested on the chat UI's tiny real Llama and its two LoRA adapters."""

from tests.ui.conftest import chat_store, engine, tiny_model_files  # noqa: F401 (fixtures)
