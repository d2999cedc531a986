"""The one error type of publishing; the CLI prints its message as one line."""

from core.errors import LoraForgeError


class ExportError(LoraForgeError):
    """An export cannot be made as asked; the message says why and what to do."""
