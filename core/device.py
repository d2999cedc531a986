"""Where models run: the --device option, else LORAFORGE_DEVICE, else CUDA when available."""

from __future__ import annotations

from core.settings import get_settings


def resolve_device(device: str | None = None) -> str:
    import torch

    choice = device or get_settings().device
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return choice
