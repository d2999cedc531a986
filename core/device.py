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


# A base this small is read from the CPU's caches, not from memory, on every token: its decode is
# bound by arithmetic, which CPUs without native bfloat16 do faster in float32 (a 1.3M-parameter
# Llama: 2.4 ms a step in float32, 3.2 in bfloat16). Above it decoding is bound by memory
# bandwidth, and bfloat16 halves the bytes read (SmolLM2-135M on 2 cores: 77 ms a step in
# float32, 46 in bfloat16; from 4M parameters up bfloat16 was the faster).
CPU_BFLOAT16_MIN_BYTES = 64 << 20



class ServeDtype(str, enum.Enum):
    """The ``--dtype`` choices of ``loraforge ui`` and ``loraforge serve``."""

    auto = "auto"
    float32 = "float32"
    bfloat16 = "bfloat16"


DTYPES = tuple(choice.value for choice in ServeDtype)
DTYPE_HELP = ("Weights' precision when serving: bfloat16 halves memory and, on a CPU, the "
              "memory read per token (SmolLM2 decodes 1.5x faster); float32 gives the replies "
              "`loraforge eval` scores. auto: bfloat16 on a GPU, and on a CPU for a base of "
              "64 MB or more of float32 weights.")


def resolve_dtype(choice: str, device: str, model_path: str):
    """The torch dtype to serve a base in: ``choice`` unless it is ``auto``."""
    import torch

    if choice not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {choice!r}")
    if choice != "auto":
        return getattr(torch, choice)
    if device != "cpu":
        return torch.bfloat16
    return torch.bfloat16 if _float32_bytes(model_path) >= CPU_BFLOAT16_MIN_BYTES \
        else torch.float32


def _float32_bytes(model_path: str) -> int:
    """The base's weights in float32 bytes, from its safetensors headers; a Hub id (nothing
    local to read) counts as large: every model worth fetching is."""
    import json
    import struct
    from pathlib import Path

    folder = Path(model_path)
    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    if not files:
        return CPU_BFLOAT16_MIN_BYTES
    total = 0
    for file in files:
        with open(file, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
        for key, entry in header.items():
            if key != "__metadata__":
                count = 1
                for size in entry["shape"]:
                    count *= size
                total += 4 * count
    return total
