"""The store's errors; the CLI prints their message as one line."""

from core.errors import LoraForgeError


class StoreError(LoraForgeError):
    """The database is missing, out of date or refused a write."""


class RegistryError(LoraForgeError):
    """An adapter, base model or dataset snapshot is unknown or inconsistent."""
