"""Conformance kit: what every trainer backend must do, checked on a model small enough for CI.

Plugin authors run it against their own backend (see docs/plugins.md)::

    from trainers.testing import check_backend

    def test_my_backend_conforms(tmp_path):
        check_backend(MyBackend(), tmp_path)

It builds a tiny random Llama and a dozen QA chats in ``tmp_path``, trains a few dozen steps,
and checks the backend's shape, its metrics, that the loss falls, and that the artifacts load
with plain ``PeftModel.from_pretrained`` (or ``from_pretrained`` for a full model) and change
the model's output. Nothing touches the LoRAForge store.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from trainers.discovery import NAME_PATTERN
from trainers.protocol import TrainResult

REQUIRED_METRICS = ("trainable_params", "total_params", "peak_memory_bytes", "wall_seconds",
                    "steps", "tokens_per_second", "final_loss")

KIT_SETTINGS = {"max_steps": 30, "max_length": 64, "batch_size": 4, "logging_steps": 1,
                "warmup_ratio": 0.0, "save_steps": 0, "generate_examples": 2,
                "max_new_tokens": 8, "progress_bar": False}

QA = [
    ("What is glaucoma?", "Glaucoma is a group of diseases that damage the optic nerve."),
    ("What causes dry eye?", "Dry eye happens when the eyes do not make enough tears."),
    ("Who gets shingles?", "Anyone who has had chickenpox can get shingles."),
    ("What is COPD?", "COPD is a lung disease that makes it hard to breathe."),
    ("How is gout treated?", "Gout is treated with medicines that lower uric acid."),
    ("What is a cataract?", "A cataract is a clouding of the lens of the eye."),
    ("What are the signs of a stroke?", "Sudden numbness, confusion and trouble speaking."),
    ("How can I prevent falls?", "Exercise, safer homes and eye checks prevent falls."),
    ("What is osteoporosis?", "Osteoporosis makes bones weak and likely to break."),
    ("What is hearing loss?", "Hearing loss is a common problem as people age."),
    ("What is anemia?", "Anemia means the blood has too few red blood cells."),
    ("What is psoriasis?", "Psoriasis is a skin disease that causes red, scaly patches."),
]


class ConformanceError(AssertionError):
    """The backend does not do what LoRAForge expects of a trainer; the message lists why."""


def write_chats(directory: Path) -> tuple[Path, Path]:
    """train.jsonl (every pair) and test.jsonl (two of them), in a snapshot's format."""
    directory.mkdir(parents=True, exist_ok=True)
    chats = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
             for q, a in QA]
    train, test = directory / "train.jsonl", directory / "test.jsonl"
    train.write_text("".join(json.dumps(c) + "\n" for c in chats))
    test.write_text("".join(json.dumps(c) + "\n" for c in chats[:2]))
    return train, test


def make_tiny_model(directory: Path, seed: int = 0) -> str:
    """A random 2-layer Llama with a ChatML BPE tokenizer learnt from the kit's chats."""
    from transformers import LlamaForCausalLM

    from trainers.base_model import make_config, train_tokenizer

    torch.manual_seed(seed)
    tokenizer = train_tokenizer([f"{q}\n{a}" for q, a in QA] * 4, vocab_size=400)
    config = make_config(tokenizer, hidden_size=64, layers=2, seq_len=128)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


def _shape_problems(backend: Any) -> list[str]:
    problems = []
    name = getattr(backend, "name", None)
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        problems.append(f"name {name!r} must be lowercase letters, digits, '-' or '_'")
    config_class = getattr(backend, "config_class", None)
    if not (isinstance(config_class, type) and dataclasses.is_dataclass(config_class)):
        return [*problems, "config_class must be a dataclass"]
    for f in dataclasses.fields(config_class):
        if not f.metadata.get("help"):
            problems.append(f"config field {f.name!r} has no metadata={{'help': ...}}")
    try:
        config = config_class()
        as_dict = config.to_dict() if hasattr(config, "to_dict") else dataclasses.asdict(config)
        json.dumps(as_dict)
    except Exception as exc:
        problems.append(f"the default config must build and be JSON-serializable ({exc})")
    if not callable(getattr(backend, "train", None)):
        problems.append("it has no train() method")
    return problems


def _config(backend: Any, overrides: dict[str, Any] | None) -> Any:
    known = {f.name for f in dataclasses.fields(backend.config_class)}
    wanted = {**KIT_SETTINGS, **(overrides or {})}
    return backend.config_class(**{k: v for k, v in wanted.items() if k in known})


def _load_trained(base_path: str, output_dir: Path):
    from transformers import AutoModelForCausalLM

    if (output_dir / "adapter_config.json").is_file():
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(base_path)
        return PeftModel.from_pretrained(base, str(output_dir)).eval()
    return AutoModelForCausalLM.from_pretrained(str(output_dir)).eval()


def _loss_fell(curve: list[dict[str, float]]) -> bool:
    if len(curve) < 4:
        return False
    quarter = len(curve) // 4
    first = sum(p["loss"] for p in curve[:quarter]) / quarter
    last = sum(p["loss"] for p in curve[-quarter:]) / quarter
    return last < first


def check_backend(backend: Any, workdir: Path,
                  overrides: dict[str, Any] | None = None) -> TrainResult:
    """Train ``backend`` on the kit's data in ``workdir``; raise ConformanceError on any failure.

    ``overrides`` are config fields to set on top of the kit's short schedule (for example a
    learning rate your method needs). Returns the backend's TrainResult for further checks.
    """
    problems = _shape_problems(backend)
    if problems:
        raise ConformanceError("; ".join(problems))
    model_path = make_tiny_model(workdir / "base")
    train_file, test_file = write_chats(workdir / "data")
    output_dir = workdir / "out"
    output_dir.mkdir(parents=True, exist_ok=True)
    result = backend.train(model_path, train_file, test_file, output_dir,
                           _config(backend, overrides))
    if not isinstance(result, TrainResult):
        raise ConformanceError(f"train() must return a TrainResult, got {type(result).__name__}")
    missing = [k for k in REQUIRED_METRICS if k not in result.metrics]
    if missing:
        problems.append(f"metrics lack {', '.join(missing)} (see trainers.metrics.run_metrics)")
    if not _loss_fell(result.loss_curve):
        problems.append(f"the training loss did not fall: {result.loss_curve}")
    try:
        json.dumps(result.metrics)
    except TypeError as exc:
        problems.append(f"metrics must be JSON-serializable ({exc})")
    problems += _artifact_problems(model_path, output_dir)
    if problems:
        raise ConformanceError("; ".join(problems))
    return result


def _artifact_problems(model_path: str, output_dir: Path) -> list[str]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        trained = _load_trained(model_path, output_dir)
    except Exception as exc:
        return [f"the artifacts in {output_dir} do not load with PeftModel.from_pretrained or "
                f"AutoModelForCausalLM.from_pretrained ({type(exc).__name__}: {exc})"]
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    ids = tokenizer.apply_chat_template([{"role": "user", "content": QA[0][0]}],
                                        add_generation_prompt=True, return_tensors="pt",
                                        return_dict=True)["input_ids"]
    base = AutoModelForCausalLM.from_pretrained(model_path).eval()
    with torch.no_grad():
        before, after = base(input_ids=ids).logits, trained(input_ids=ids).logits
    if torch.allclose(before, after, atol=1e-4):
        return ["the trained artifacts do not change the model's output"]
    return []
