"""The chat engine's error, importable without the engine (and torch), so the CLIs can parse
their options and say what is wrong before anything heavy loads."""

from __future__ import annotations

from core.errors import LoraForgeError


class ChatError(LoraForgeError):
    """A chat request cannot be served: unknown adapter, unsafe weights, missing base model."""
