"""The trainers' one exception type; the CLI prints its message as one red line."""

from core.errors import LoraForgeError


class TrainerError(LoraForgeError):
    """A dataset, base model or training run cannot be built from what was asked."""
