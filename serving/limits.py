"""The chat engine's default limits, importable without the engine (and torch): the CLIs show
them in ``--help``."""

from __future__ import annotations

DEFAULT_MAX_ADAPTERS = 8  # adapters kept attached at once, least recently used dropped first
DEFAULT_MAX_BATCH = 16  # requests decoded together at most
DEFAULT_PREFIX_CACHE_MB = 256  # keys and values of finished replies kept for reuse

PREFIX_CACHE_HELP = ("Memory for the keys and values of finished replies, reused by prompts that "
                     "start the same way (a chat's earlier turns, a shared system prompt) so only "
                     "the new part is computed; 0 turns it off.")
MERGE_HELP = ("While one LoRA adapter serves every running request, fold it into the base "
              "weights so it decodes as fast as the base; the base's own weights are read back "
              "from its files when another adapter or the base is asked for.")
