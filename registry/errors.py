"""One exception type per component; the CLI prints their message as one line."""


class LoraForgeError(Exception):
    """Base for errors whose message tells the user what to do."""


class StoreError(LoraForgeError):
    """The database is missing, out of date or refused a write."""


class RegistryError(LoraForgeError):
    """An adapter, base model or dataset snapshot is unknown or inconsistent."""
