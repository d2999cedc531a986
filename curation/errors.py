"""The one error type of curation; the CLI prints its message as one line."""

from core.errors import LoraForgeError


class CurationError(LoraForgeError):
    """A snapshot cannot be built, read or exported as asked; the message says what to do."""
