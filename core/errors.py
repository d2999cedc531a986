"""The base of every error whose message tells the user what to do; the CLI prints it as one
line. Each package subclasses it (StoreError, TrainerError, CurationError, ...)."""


class LoraForgeError(Exception):
    """Base for errors whose message tells the user what to do."""
