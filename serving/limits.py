"""The chat engine's default limits, importable without the engine (and torch): the CLIs show
them in ``--help``."""

from __future__ import annotations

DEFAULT_MAX_ADAPTERS = 8  # adapters kept attached at once, least recently used dropped first
DEFAULT_MAX_BATCH = 16  # requests decoded together at most
