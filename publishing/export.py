"""``loraforge adapters export``: an adapter as GGUF for llama.cpp, Ollama and LM Studio.

Two kinds of file, both recorded against the adapter with size and SHA-256:

- **merged**: the adapter folded into its base, one self-contained GGUF (F16 by default, Q8_0
  or F32 on request) with the tokenizer and chat template;
- **lora**: the adapter alone, for llama.cpp's ``--lora`` and Ollama's ``ADAPTER``, beside one
  GGUF of the base that every adapter of that base shares (written once, under
  ``LORAFORGE_HOME/exports/bases``).

Each file is written under a hidden temporary name and renamed into place, so a killed export
never leaves a partial file where the final one belongs.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.settings import get_settings
from publishing import gguf_file
from publishing.errors import ExportError
from publishing.merge import load_base
from publishing.ollama import modelfile
from registry.adapter_files import check_adapter_dir, not_plain_lora
from registry.adapters import AdapterRecord, get_adapter
from registry.bases import BaseRecord, find_base
from registry.exports import record_export
from registry.files import build_file, sha256_of

StatusFn = Callable[[str], None]
FULL_MODEL_FILES = ("config.json", "model.safetensors")
DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


@dataclass(frozen=True)
class ExportedFile:
    kind: str  # merged | lora
    path: Path
    quantization: str
    size_bytes: int
    sha256: str
    modelfile: Path


@dataclass(frozen=True)
class RoundTrip:
    """The merged GGUF read back by transformers against the merged PyTorch model."""

    max_abs_logit_diff: float
    greedy_tokens_equal: int  # of ``greedy_tokens``, from the start
    greedy_tokens: int


@dataclass(frozen=True)
class ExportResult:
    adapter_label: str
    ollama_name: str
    files: list[ExportedFile] = field(default_factory=list)
    base_file: Path | None = None  # the shared base GGUF a LoRA GGUF runs on
    lora_alpha: float | None = None
    round_trip: RoundTrip | None = None


def default_out_dir(record: AdapterRecord) -> Path:
    return get_settings().home / "exports" / f"{record.name}-v{record.version}"


def _write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    try:
        with build_file(path) as tmp:
            write(tmp)
    except OSError as exc:
        # numpy's tofile reports a short write ("N requested and 0 written") without an errno
        if exc.errno in DISK_FULL or (exc.errno is None and "written" in str(exc)):
            raise ExportError(f"out of disk space writing {path}; free some space or pass "
                              "--out on a disk with room (nothing partial was left)") from exc
        raise ExportError(f"cannot write {path} ({exc.strerror or exc})") from exc


def _source_pre(base: BaseRecord) -> str | None:
    """The pre-tokenizer named by the GGUF a base was converted from (SmolLM2's "smollm"):
    transformers' GGUF reader does not keep it, so the converted tokenizer cannot tell us."""
    from gguf import GGUFReader

    source: Path | None = None
    if base.config.get("package"):
        from trainers.errors import TrainerError
        from trainers.gguf_import import package_gguf

        try:
            source = package_gguf(base.config["package"], base.config.get("gguf_file"))
        except TrainerError:
            return None
    elif base.source.endswith(".gguf") and Path(base.source).is_file():
        source = Path(base.source)
    if source is None:
        return None
    found = GGUFReader(str(source)).fields.get("tokenizer.ggml.pre")
    return found.contents() if found is not None else None


def _load(record: AdapterRecord, base: BaseRecord, lora: bool, say: StatusFn):
    """(base model, peft-or-full model, tokenizer); the base is a separate copy only when a
    PEFT adapter wraps it (merging rewrites the base's weights in place)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(record.path)
    if all((folder / f).is_file() for f in FULL_MODEL_FILES):  # a full fine-tune
        if lora:
            raise ExportError(f"{record.label} is a full fine-tune with no adapter weights; "
                              "export it merged (without --lora)")
        say("loading the fine-tuned model")
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32,
                                                     use_safetensors=True)
        tokenizer_dir = folder if (folder / "tokenizer.json").is_file() else base.model_path
        return None, model.eval(), AutoTokenizer.from_pretrained(tokenizer_dir)
    config = check_adapter_dir(folder, f"adapter {record.label}")
    if lora:
        check_lora_config(config, record.label)
    say(f"loading base {base.name}")
    model = load_base(base.name, base.model_path)
    return model, None, AutoTokenizer.from_pretrained(base.model_path)


def check_lora_config(config: dict[str, Any], label: str) -> None:
    """Refuse, from adapter_config.json and before any model is loaded, an adapter that a LoRA
    GGUF cannot hold."""
    problem = not_plain_lora(config)
    if problem:
        raise ExportError(f"{label} is {problem}, which llama.cpp's LoRA format cannot express; "
                          "export it merged (without --lora)")
    if config.get("modules_to_save"):
        raise ExportError(f"{label} also trains whole modules ({config['modules_to_save']}), "
                          "which a LoRA GGUF cannot hold; export it merged (without --lora)")


def lora_pairs(peft_model: Any, label: str) -> list[gguf_file.LoraPair]:
    """The A/B matrices and scale of every adapted linear layer."""
    from peft.tuners.lora import LoraLayer

    pairs = []
    for name, module in peft_model.named_modules():
        if not isinstance(module, LoraLayer) or "default" not in module.lora_A:
            if isinstance(module, LoraLayer) and module.lora_embedding_A:
                raise ExportError(f"{label} adapts the embeddings, which this exporter does not "
                                  "write as LoRA; export it merged (without --lora)")
            continue
        hf_name = name.removeprefix("base_model.model.") + ".weight"
        pairs.append(gguf_file.LoraPair(
            hf_name=hf_name, a=module.lora_A["default"].weight.detach().float().numpy(),
            b=module.lora_B["default"].weight.detach().float().numpy(),
            scale=float(module.scaling["default"])))
    if not pairs:
        raise ExportError(f"{label} adapts no linear layer; nothing to write as LoRA")
    return pairs


@dataclass
class _Export:
    """One export: what is known once the adapter and its base are checked."""

    record: AdapterRecord
    base: BaseRecord
    config: Any
    quant: gguf_file.Quantization
    out_dir: Path
    tokenizer: Any
    pre: str | None
    say: StatusFn
    progress: bool

    @property
    def stem(self) -> str:
        return f"{self.record.name}-v{self.record.version}"

    def _modelfile(self, path: Path, model_file: str, adapter_file: str | None = None) -> None:
        text = modelfile(model_file, self.tokenizer, adapter_file=adapter_file,
                         context_length=getattr(self.config, "max_position_embeddings", None))
        _write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))

    def _record(self, kind: str, path: Path, quant: str, model_file: Path,
                details: dict[str, Any]) -> ExportedFile:
        size, digest = path.stat().st_size, sha256_of(path)
        record_export(adapter_id=self.record.id, format="gguf", kind=kind, quantization=quant,
                      path=path, size_bytes=size, sha256=digest,
                      details={**details, "modelfile": str(model_file)})
        return ExportedFile(kind, path, quant, size, digest, model_file)

    def shared_base(self, base_model: Any) -> Path:
        """The base as GGUF, written once and shared by every LoRA GGUF of this base."""
        path = (get_settings().home / "exports" / "bases"
                / f"{self.base.name}-{self.base.id}.{self.quant.name}.gguf")
        if not path.is_file():
            self.say(f"writing the shared base GGUF {path}")
            _write_atomically(path, lambda tmp: gguf_file.write_model(
                tmp, base_model, self.tokenizer, name=self.base.name, quant=self.quant,
                pre=self.pre, progress=self.progress))
        return path

    def lora(self, peft_model: Any, base_file: Path) -> tuple[ExportedFile, float]:
        pairs = lora_pairs(peft_model, self.record.label)
        quant = gguf_file.lora_quantization(self.quant).name
        path = self.out_dir / f"{self.stem}-lora.{quant}.gguf"
        self.say(f"writing {path}")
        alphas: list[float] = []
        _write_atomically(path, lambda tmp: alphas.append(gguf_file.write_lora(
            tmp, pairs, self.config, name=self.stem, quant=self.quant, progress=self.progress)))
        model_file = self.out_dir / "Modelfile.lora"
        self._modelfile(model_file, str(base_file), adapter_file=f"./{path.name}")
        return self._record("lora", path, quant, model_file, {
            "base_gguf": str(base_file), "lora_alpha": alphas[0], "layers": len(pairs)}), alphas[0]

    def merged(self, model: Any) -> ExportedFile:
        path = self.out_dir / f"{self.stem}.{self.quant.name}.gguf"
        self.say(f"writing {path}")
        _write_atomically(path, lambda tmp: gguf_file.write_model(
            tmp, model, self.tokenizer, name=self.stem, quant=self.quant, pre=self.pre,
            progress=self.progress))
        model_file = self.out_dir / "Modelfile"
        self._modelfile(model_file, f"./{path.name}")
        return self._record("merged", path, self.quant.name, model_file,
                            {"base": self.base.name})


def _checked_base(record: AdapterRecord) -> tuple[BaseRecord, Any]:
    """The adapter's base and its config, or a one-line refusal before any weight is read."""
    from transformers import AutoConfig

    base = find_base(record.base_name)
    if base is None:
        raise ExportError(f"{record.label}'s base {record.base_name!r} is not registered")
    if base.kind != "causal":
        raise ExportError(f"{record.label} is trained on the {base.kind} base {base.name!r}; "
                          "llama.cpp and Ollama run causal LMs only, so GGUF export is for "
                          "causal bases")
    try:
        config = AutoConfig.from_pretrained(base.model_path)
    except (OSError, ValueError) as exc:
        raise ExportError(f"cannot read base {base.name!r}'s config at {base.model_path}: "
                          f"{str(exc).splitlines()[0]}") from exc
    gguf_file.check_architecture(config, f"base {base.name!r}")
    return base, config


def export_gguf(label_or_id: str | int, *, quantization: str = "f16", out: Path | None = None,
                merged: bool = True, lora: bool = False, verify: bool = False,
                status: StatusFn | None = None, progress: bool = False) -> ExportResult:
    """Write the adapter as GGUF file(s) with Ollama Modelfiles, record them, return them."""
    say = status or (lambda _text: None)
    quant = gguf_file.quantization(quantization)
    if not merged and not lora:
        raise ExportError("nothing to export: pass --merged, --lora or both")
    record = get_adapter(label_or_id)
    base, config = _checked_base(record)
    base_model, model, tokenizer = _load(record, base, lora, say)
    plan = _Export(record, base, config, quant, Path(out) if out else default_out_dir(record),
               tokenizer, _source_pre(base), say, progress)
    files: list[ExportedFile] = []
    base_file, alpha, checked = None, None, None
    if base_model is not None:  # a PEFT adapter on its base (else a full fine-tune)
        from peft import PeftModel

        if lora:
            base_file = plan.shared_base(base_model)  # before merging rewrites its weights
        say(f"loading adapter {record.label}")
        model = PeftModel.from_pretrained(base_model, record.path).eval()
        if lora:
            exported, alpha = plan.lora(model, base_file)
            files.append(exported)
        if merged:
            say("merging the adapter into its base")
            model = model.merge_and_unload()
    if merged:
        files.append(plan.merged(model))
        if verify:
            say("reading the GGUF back with transformers")
            checked = round_trip(files[-1].path, model, tokenizer)
    return ExportResult(record.label, f"{record.name}:v{record.version}".lower(), files,
                        base_file, alpha, checked)


def round_trip(path: Path, model: Any, tokenizer: Any, *, greedy_tokens: int = 20) -> RoundTrip:
    """Load ``path`` with transformers' GGUF reader and compare it with ``model``: the largest
    logit difference on a chat prompt, and how many greedy tokens agree from the start."""
    import torch
    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                  dtype=torch.float32).eval()
    messages = [{"role": "user", "content": "What are the symptoms of glaucoma?"}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    with torch.no_grad():
        diff = (model(**inputs).logits - loaded(**inputs).logits).abs().max().item()
        settings = {"max_new_tokens": greedy_tokens, "do_sample": False,
                    "pad_token_id": tokenizer.pad_token_id or tokenizer.eos_token_id}
        prompt = inputs["input_ids"].shape[1]
        ours = model.generate(**inputs, **settings, min_new_tokens=greedy_tokens)[0, prompt:]
        theirs = loaded.generate(**inputs, **settings, min_new_tokens=greedy_tokens)[0, prompt:]
    same = 0
    for a, b in zip(ours.tolist(), theirs.tolist(), strict=False):
        if a != b:
            break
        same += 1
    return RoundTrip(max_abs_logit_diff=diff, greedy_tokens_equal=same,
                     greedy_tokens=greedy_tokens)
