"""What makes a folder a loadable adapter: a PEFT config and safetensors weights, both intact.

Every command that opens an adapter folder (eval, merge, push, show, the chat engine, a Hub
pull) checks it here first, so a damaged or pickle-only folder is one clear line before any
model is loaded, and the line says the same thing whichever command met it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from registry.errors import RegistryError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# Formats whose loading runs pickle, which can execute arbitrary code.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


class AdapterFileError(RegistryError):
    """An adapter folder is missing, damaged, or holds weights we refuse to load."""


def read_adapter_config(folder: Path, who: str) -> dict[str, Any]:
    """The folder's adapter_config.json as a dict; ``who`` names the adapter in errors."""
    config_file = folder / ADAPTER_CONFIG
    if not folder.is_dir():
        raise AdapterFileError(f"{who}: its folder {folder} is gone; pull or train it again, or "
                               "remove the record with `loraforge adapters delete`")
    if not config_file.is_file():
        raise AdapterFileError(f"{who}: {folder} has no {ADAPTER_CONFIG}; it is not a PEFT "
                               "adapter folder")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AdapterFileError(f"{who}: {config_file} is not valid JSON ({exc}); the file is "
                               "damaged: re-save the adapter") from exc
    except OSError as exc:
        raise AdapterFileError(f"{who}: cannot read {config_file} ({exc.strerror})") from exc
    if not isinstance(config, dict) or "peft_type" not in config:
        raise AdapterFileError(f"{who}: {config_file} has no peft_type; not a PEFT adapter")
    return config


def check_adapter_dir(folder: Path, who: str) -> dict[str, Any]:
    """Refuse a folder that PEFT could not load safely; returns its adapter config."""
    from safetensors import SafetensorError, safe_open

    config = read_adapter_config(folder, who)
    weights = folder / ADAPTER_WEIGHTS
    if not weights.is_file():
        pickles = sorted(p.name for p in folder.iterdir() if p.name.endswith(PICKLE_SUFFIXES))
        if pickles:
            raise AdapterFileError(
                f"{who}: {folder} has only pickle weights ({', '.join(pickles)}); loading a "
                "pickle can run arbitrary code, so only safetensors are accepted: re-save it "
                "with save_pretrained(..., safe_serialization=True)")
        raise AdapterFileError(f"{who}: {folder} has no {ADAPTER_WEIGHTS}")
    try:
        with safe_open(str(weights), framework="pt") as opened:
            keys = list(opened.keys())
        size = weights.stat().st_size
    except (SafetensorError, OSError, ValueError) as exc:
        raise AdapterFileError(f"{who}: {weights} is not a readable safetensors file "
                               f"({' '.join(str(exc).split())}); the file is damaged or cut "
                               "short: re-save or re-download it") from exc
    if not keys:
        raise AdapterFileError(f"{who}: {weights} holds no tensors")
    _check_length(weights, size, who)
    return config


def _check_length(weights: Path, size: int, who: str) -> None:
    """The header promises data up to its largest end offset; a truncated file has less."""
    with weights.open("rb") as handle:
        header_len = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(header_len))
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"),
              default=0)
    if 8 + header_len + end > size:
        raise AdapterFileError(f"{who}: {weights} is cut short ({size:,} of "
                               f"{8 + header_len + end:,} bytes); re-save or re-download it")


def not_plain_lora(config: dict[str, Any]) -> str | None:
    """Why an adapter is not plain LoRA (A/B matrices and nothing else), e.g. "a DoRA
    adapter"; None when it is. Formats that hold LoRA only (llama.cpp's, vLLM's) refuse these."""
    if config.get("peft_type") != "LORA":
        return f"a {config.get('peft_type')} adapter"
    if config.get("use_dora"):
        return "a DoRA adapter"
    return None
