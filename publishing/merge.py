"""``loraforge adapters merge``: fold an adapter into its base and save the full model."""

from __future__ import annotations

from pathlib import Path

from publishing.errors import ExportError
from registry.adapter_files import check_adapter_dir
from registry.adapters import get_adapter
from registry.files import build_dir


def load_base(name: str, path: str):
    """A base to merge into or export: fp32, from safetensors only; one line if it cannot."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32,
                                                     use_safetensors=True)
    except (OSError, ValueError) as exc:
        raise ExportError(f"cannot load base {name!r} from {path}: "
                          f"{str(exc).splitlines()[0]}") from exc
    return model.eval()


def merge_adapter(label_or_id: str | int, out: Path, *, device: str = "cpu") -> Path:
    """Fold the adapter into its base and save the full model (safetensors) and tokenizer.

    The folder appears whole or not at all (``build_dir``): a killed merge leaves no
    half-written model under ``out``.
    """
    from peft import PeftModel
    from transformers import AutoTokenizer

    record = get_adapter(label_or_id)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ExportError(f"{out} is not empty; choose a new --out directory")
    check_adapter_dir(Path(record.path), f"adapter {record.label}")
    base = load_base(record.base_name, record.base_path)
    merged = PeftModel.from_pretrained(base.to(device), record.path).merge_and_unload()
    with build_dir(out) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        try:
            AutoTokenizer.from_pretrained(record.base_path).save_pretrained(tmp)
        except (OSError, ValueError):
            pass  # some bases ship no tokenizer; the weights are what merge promises
    return out
