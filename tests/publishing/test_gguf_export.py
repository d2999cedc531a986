"""GGUF export, checked by reading the files back: transformers' own GGUF reader for the merged
model, and the adapter GGUF's A/B matrices applied to the base GGUF for the LoRA file.

llama.cpp and Ollama cannot be installed here; these round trips are what stands in for them.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from publishing.errors import ExportError
from publishing.export import export_gguf
from registry.db import session_scope
from registry.exports import exports_for
from registry.models import Adapter, BaseModel, ModelKind
from tests.test_bad_inputs import LIMIT, _cli_with_limits
from tests.trainers.test_train_cli import run_cli
from tests.ui.conftest import TinyModelFiles

PROMPTS = ["What is a low-rank adapter?", "Patients with high blood pressure should see a doctor."]
# transformers' GGUF reader, per tensor: llama.cpp's name -> the HF module it undoes it into
MODULES = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
           "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj"}


def _merged(files: TinyModelFiles, adapter: Path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(files.base, dtype=torch.float32)
    return PeftModel.from_pretrained(base, adapter).merge_and_unload().eval()


def _from_gguf(path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                 dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


def _inputs(files: TinyModelFiles) -> dict[str, torch.Tensor]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(files.base)
    return tokenizer.apply_chat_template([{"role": "user", "content": PROMPTS[0]}],
                                         add_generation_prompt=True, return_tensors="pt",
                                         return_dict=True)


def _greedy(model, inputs: dict[str, torch.Tensor], n: int = 20) -> list[int]:
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                             pad_token_id=0)
    return out[0, inputs["input_ids"].shape[1]:].tolist()


def _logits(model, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits


def test_merged_f16_reads_back_with_the_merged_logits_tokens_and_tokenizer(
        chat_store: TinyModelFiles, capsys):
    from transformers import AutoTokenizer

    result = export_gguf("alpha")
    [exported] = result.files
    assert exported.kind == "merged" and exported.path.name == "alpha-v1.F16.gguf"
    merged, inputs = _merged(chat_store, chat_store.adapter_a), _inputs(chat_store)
    loaded, loaded_tokenizer = _from_gguf(exported.path)
    assert (_logits(merged, inputs) - _logits(loaded, inputs)).abs().max() < 1e-2
    assert _greedy(merged, inputs) == _greedy(loaded, inputs)
    # the adapter changed the model, so matching the merged model is not matching the base
    base = _merged(chat_store, chat_store.adapter_b)
    assert (_logits(base, inputs) - _logits(loaded, inputs)).abs().max() > 0.1

    tokenizer = AutoTokenizer.from_pretrained(chat_store.base)
    for text in PROMPTS + ["<|im_start|>user\nHello, how are you?<|im_end|>"]:
        assert loaded_tokenizer(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert loaded_tokenizer.chat_template == tokenizer.chat_template

    [row] = exports_for(_adapter_id("alpha"))
    assert (row.format, row.kind, row.quantization) == ("gguf", "merged", "F16")
    assert row.size_bytes == exported.path.stat().st_size
    assert row.sha256 == hashlib.sha256(exported.path.read_bytes()).hexdigest()
    code, out, _ = run_cli(capsys, "adapters", "show", "alpha", "--json")
    assert code == 0 and json.loads(out)["exports"][0]["sha256"] == row.sha256

    modelfile = exported.modelfile.read_text()
    assert "FROM ./alpha-v1.F16.gguf\n" in modelfile
    assert 'PARAMETER stop "<|im_end|>"' in modelfile.splitlines()


def _adapter_id(name: str) -> int:
    from registry.adapters import get_adapter

    return get_adapter(name).id


def test_q8_0_stays_within_its_rounding_bound_at_half_the_size(chat_store: TinyModelFiles):
    f16 = export_gguf("alpha").files[0]
    q8 = export_gguf("alpha", quantization="q8_0").files[0]
    assert q8.path.name == "alpha-v1.Q8_0.gguf"
    assert q8.size_bytes < 0.6 * f16.size_bytes
    merged, inputs = _merged(chat_store, chat_store.adapter_a), _inputs(chat_store)
    ours = _logits(merged, inputs)
    diff = (ours - _logits(_from_gguf(q8.path)[0], inputs)).abs().max()
    # Q8_0 stores each block of 32 weights as int8 times one scale, so every weight moves by at
    # most 1/254 of its block's largest weight (0.4%). Through two layers and the head that
    # stays well under 5% of the logits' spread, and far above F16's error.
    assert 1e-3 < diff < 0.05 * (ours.max() - ours.min()), diff
    assert {r.quantization for r in exports_for(_adapter_id("alpha"))} == {"F16", "Q8_0"}


def _reverse_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """transformers' GGUF reader's inverse of llama.cpp's rotary row order, written out."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(2, 1) \
        .reshape(w.shape)


def test_lora_gguf_applied_to_the_base_gguf_equals_the_merged_model(chat_store: TinyModelFiles):
    from gguf import GGUFReader

    result = export_gguf("alpha", merged=False, lora=True)
    [exported] = result.files
    assert exported.kind == "lora" and result.base_file is not None
    reader = GGUFReader(str(exported.path))
    assert reader.fields["general.type"].contents() == "adapter"
    assert reader.fields["adapter.type"].contents() == "lora"
    alpha = reader.fields["adapter.lora.alpha"].contents()
    assert alpha == 32.0  # r=8, lora_alpha=32: llama.cpp scales by alpha / rank = 4
    tensors = {t.name: np.array(t.data, dtype=np.float32) for t in reader.tensors}
    assert len(tensors) == 2 * 4 * 2  # A and B, four projections, two layers

    model, _ = _from_gguf(result.base_file)
    heads = model.config.num_attention_heads
    with torch.no_grad():
        for name, a in tensors.items():
            if not name.endswith(".lora_a"):
                continue
            b = tensors[name.removesuffix("_a") + "_b"]
            _, block, kind, _, _ = name.split(".")
            delta = b @ a * (alpha / a.shape[0])
            if kind in ("attn_q", "attn_k"):
                delta = _reverse_permute(delta, heads)
            layer = model.get_submodule(f"model.layers.{block}.{MODULES[kind]}")
            layer.weight += torch.from_numpy(delta)
    inputs = _inputs(chat_store)
    merged = _merged(chat_store, chat_store.adapter_a)
    assert (_logits(merged, inputs) - _logits(model, inputs)).abs().max() < 1e-2
    assert _greedy(merged, inputs) == _greedy(model, inputs)

    modelfile = exported.modelfile.read_text().splitlines()
    assert f"FROM {result.base_file}" in modelfile and \
        "ADAPTER ./alpha-v1-lora.F16.gguf" in modelfile
    # a second adapter of the same base reuses the base file rather than writing it again
    written = result.base_file.stat().st_mtime_ns
    assert export_gguf("beta", merged=False, lora=True).base_file == result.base_file
    assert result.base_file.stat().st_mtime_ns == written


def _add(name: str, path: Path, base: str = "tiny-chat", method: str = "lora") -> None:
    with session_scope() as session:
        base_id = session.query(BaseModel.id).filter_by(name=base).scalar()
        session.add(Adapter(name=name, version=1, path=str(path), method=method,
                            base_model_id=base_id))


def test_what_gguf_cannot_hold_is_refused_in_one_line_with_nothing_written(
        chat_store: TinyModelFiles, tmp_path: Path, capsys):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

    dora = tmp_path / "dora"
    model = AutoModelForCausalLM.from_pretrained(chat_store.base)
    get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj"], use_dora=True)) \
        .save_pretrained(dora)
    _add("dora", dora)
    gpt2 = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64)) \
        .save_pretrained(gpt2)
    with session_scope() as session:
        session.add(BaseModel(name="gpt2-tiny", source="test", path=str(gpt2)))
        session.add(BaseModel(name="llada-tiny", source="test", path=str(chat_store.base),
                              kind=ModelKind.masked_diffusion))
    _add("on-gpt2", dora, base="gpt2-tiny")
    _add("on-llada", dora, base="llada-tiny")
    out = tmp_path / "out"
    capsys.readouterr()
    for args, message in [
        (["dora", "--lora"], "dora:v1 is a DoRA adapter, which llama.cpp's LoRA format cannot "
                             "express; export it merged (without --lora)"),
        (["on-gpt2"], "base 'gpt2-tiny' is a 'gpt2' model; GGUF export supports the Llama "
                      "family (model_type llama) so far"),
        (["on-llada"], "on-llada:v1 is trained on the masked_diffusion base 'llada-tiny'; "
                       "llama.cpp and Ollama run causal LMs only"),
        (["alpha", "--no-merged"], "nothing to export: pass --merged, --lora or both"),
    ]:
        code, _, err = run_cli(capsys, "adapters", "export", *args, "--out", str(out))
        lines = err.strip().splitlines()
        assert code == 1 and len(lines) == 1 and message in lines[0], err
    assert not out.exists() or not list(out.iterdir())
    assert all(not exports_for(_adapter_id(n)) for n in ("dora", "on-gpt2", "on-llada"))
    # merged, the DoRA adapter is fine: its magnitudes are folded into the weights
    assert export_gguf("dora", out=out).files[0].path.is_file()


def test_a_full_disk_is_one_line_and_leaves_no_partial_file(chat_store: TinyModelFiles,
                                                            home: Path, tmp_path: Path):
    out = tmp_path / "out"
    done = _cli_with_limits(home, ["adapters", "export", "alpha", "--out", str(out)], LIMIT)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 1, done.stdout
    assert len(lines) == 1 and lines[0].startswith(
        f"error: out of disk space writing {out / 'alpha-v1.F16.gguf'}"), done.stderr
    assert list(out.iterdir()) == []
    assert not exports_for(_adapter_id("alpha"))


def test_a_killed_export_leaves_no_file_under_the_final_name_and_reruns(
        chat_store: TinyModelFiles, home: Path, tmp_path: Path):
    out = tmp_path / "out"
    env = {**os.environ, "LORAFORGE_HOME": str(home)}
    env.pop("LORAFORGE_DATABASE_URL", None)
    args = [sys.executable, "-m", "loraforge", "adapters", "export", "alpha", "--out", str(out)]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline \
            and not any(out.glob(".alpha-v1.F16.gguf.partial-*")):
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    final = out / "alpha-v1.F16.gguf"
    # killed while writing: no final file and no row; killed after it ended: both
    assert final.is_file() == bool(exports_for(_adapter_id("alpha")))
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    [row] = exports_for(_adapter_id("alpha"))
    assert row.sha256 == hashlib.sha256(final.read_bytes()).hexdigest()


def test_export_refuses_an_unknown_quantization_before_loading_anything(chat_store):
    with pytest.raises(ExportError, match="unknown quantization 'q4_k'"):
        export_gguf("alpha", quantization="q4_k")
