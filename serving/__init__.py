"""Serving models: one resident base with hot-swapped adapters (engine.py), used by the chat UI
and meant for an HTTP API too."""
