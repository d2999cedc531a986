"""Where models run: the --device option, else LORAFORGE_DEVICE, else CUDA when available."""

from __future__ import annotations

import enum

from core.settings import get_settings


def resolve_device(device: str | None = None) -> str:
    import torch

    choice = device or get_settings().device
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return choice


DTYPE_HELP = ("Weights' precision when serving. auto: float32 on a CPU, bfloat16 on a GPU. "
              "bfloat16 on a CPU halves memory and the bytes read per token: SmolLM2 decoded "
              "1.2-1.9x and prefilled 2x faster on one 2-core machine, and no faster on "
              "another; and a greedy reply may then change with the batch it shares, which "
              "float32 replies do not.")


class ServeDtype(str, enum.Enum):
    """The ``--dtype`` choices of ``loraforge ui`` and ``loraforge serve``."""

    auto = "auto"
    float32 = "float32"
    bfloat16 = "bfloat16"


DTYPES = tuple(choice.value for choice in ServeDtype)


def resolve_dtype(choice: str, device: str):
    """The torch dtype to serve in: ``choice``, or for ``auto`` bfloat16 on a GPU and float32
    on a CPU. float32 is kept on a CPU although bfloat16 decodes faster on many: in bfloat16
    the rounding of a row's products depends on how many rows share the step, so a greedy
    reply in a batch could differ from the same request alone (SmolLM2: the batching and the
    one-at-a-time engines of benchmarks/serving.py disagreed at 4 and 8 clients)."""
    import torch

    if choice not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {choice!r}")
    if choice != "auto":
        return getattr(torch, choice)
    return torch.bfloat16 if device != "cpu" else torch.float32
