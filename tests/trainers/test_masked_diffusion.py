"""The masked-diffusion backend end to end on CPU: a tiny LLaDA-style base built from the
store, LoRA trained with LLaDA's SFT objective, answers sampled by LLaDA's sampler, and the
adapter in the registry and the chat app like any other."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from gradio_client import Client
from rouge_score import rouge_scorer

from registry.adapters import get_adapter, list_adapters, list_runs
from registry.bases import find_base
from tests.trainers.conftest import _store_at, insert_qa_pairs, read_medquad
from tests.ui.conftest import free_port
from trainers.errors import TrainerError

SHORT_ANSWER_WORDS = 25
# Masked diffusion learns slower per step than next-token prediction (each step sees only the
# masked share of the answer, weighted by 1/p): the base memorises the two answers' text,
# the adapter learns to give them after the chat template's prompt.
BASE_STEPS = 600
ADAPTER_STEPS = 800
SETTINGS = {"max_steps": ADAPTER_STEPS, "learning_rate": 3e-3, "max_length": 128,
            "logging_steps": 25, "generate_examples": 1, "max_new_tokens": 48,
            "progress_bar": False, "dropout": 0.0}


@dataclass(frozen=True)
class DiffusionStore:
    home: Path
    adapter_id: int
    chats: list[list[dict]]


def rouge_l(reference: str, predicted: str) -> float:
    return rouge_scorer.RougeScorer(["rougeL"]).score(reference, predicted)["rougeL"].fmeasure


@pytest.fixture(scope="module")
def diffusion_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DiffusionStore]:
    from curation.build import build_snapshot
    from registry.snapshots import find_snapshot
    from trainers.base_model import build_tiny_base
    from trainers.run import run_training

    with _store_at(tmp_path_factory.mktemp("diffusion") / "home") as home:
        insert_qa_pairs(read_medquad(limit=200))
        build_snapshot(name="two", limit=4, test_fraction=0.25, seed=0,
                       max_answer_words=SHORT_ANSWER_WORDS)
        build_tiny_base(name="mdm", kind="masked_diffusion", steps=BASE_STEPS, vocab_size=1024,
                        seq_len=64, pretrain_snapshot="two")
        adapter_id = run_training(method="masked-diffusion", base="mdm", snapshot="two",
                                  adapter_name="mdm-lora", overrides=SETTINGS)
        train_file = Path(find_snapshot("two").path) / "train.jsonl"
        chats = [json.loads(line)["messages"] for line in train_file.open(encoding="utf-8")]
        yield DiffusionStore(home, adapter_id, chats)


@pytest.mark.slow
def test_the_diffusion_loss_decreases_and_the_run_records_its_objective(diffusion_store):
    adapter = get_adapter(diffusion_store.adapter_id)
    m = adapter.metrics
    first, last = m["initial_loss"], m["final_loss"]
    assert last < 0.5 * first, (first, last)
    assert m["objective"] == "masked_diffusion" and m["adapter_recipe"] == "lora"
    for key in ("trainable_params", "peak_memory_bytes", "samples_per_second",
                "tokens_per_second", "total_flos", "eval_loss"):
        assert m[key] > 0, key
    assert m["trainable_params"] < m["total_params"]
    config = json.loads((Path(adapter.path) / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["task_type"] is None
    assert (Path(adapter.path) / "adapter_model.safetensors").is_file()


@pytest.mark.slow
def test_the_adapter_reproduces_a_trained_answer_through_the_sampler(diffusion_store):
    from serving.engine import BASE_ONLY, ChatEngine

    engine = ChatEngine(base="mdm")
    label = get_adapter(diffusion_store.adapter_id).label
    scores, base_scores = [], []
    for chat in diffusion_store.chats:
        reference = chat[-1]["content"]
        scores.append(rouge_l(reference, engine.generate(label, chat[:-1], max_new_tokens=64)))
        base_scores.append(rouge_l(reference, engine.generate(BASE_ONLY, chat[:-1],
                                                              max_new_tokens=64)))
    assert max(scores) >= 0.8, (scores, base_scores)
    assert sum(scores) > sum(base_scores), (scores, base_scores)
    assert engine.base_loads == 1


@pytest.mark.slow
def test_a_diffusion_reply_streams_as_a_growing_prefix(diffusion_store):
    from serving.engine import ChatEngine

    engine = ChatEngine(base="mdm")
    label = get_adapter(diffusion_store.adapter_id).label
    question = diffusion_store.chats[0][:-1]
    parts = list(engine.stream(label, question, max_new_tokens=64))
    assert len(parts) > 1
    assert all(later.startswith(earlier.rstrip()[:-1]) for earlier, later in
               zip(parts, parts[1:], strict=False))
    assert parts[-1] == engine.generate(label, question, max_new_tokens=64)


@pytest.mark.slow
def test_registry_and_chat_app_treat_the_diffusion_adapter_like_any_other(diffusion_store):
    from serving.engine import BASE_ONLY, ChatEngine
    from ui.cli import launch

    assert find_base("mdm").kind == "masked_diffusion"
    adapter = next(a for a in list_adapters() if a.id == diffusion_store.adapter_id)
    assert adapter.method == "masked-diffusion" and adapter.base_name == "mdm"
    app, url = launch(host="127.0.0.1", port=free_port(), block=False, base="mdm")
    try:
        client = Client(url, verbose=False)
        update = client.predict(BASE_ONLY, api_name="/list_adapters")
        shown = f"mdm (masked diffusion) › {adapter.label}"
        assert (shown, adapter.label) in [tuple(c) for c in update["choices"]], update["choices"]
        chat = diffusion_store.chats[0]
        history, _ = client.predict(adapter.label, chat[-2]["content"], [], 64,
                                    api_name="/chat")
        reply = "".join(part["text"] for part in history[-1]["content"])
        # The app answers through the same sampler: greedy denoising is deterministic.
        expected = ChatEngine(base="mdm").generate(adapter.label, chat[:-1], max_new_tokens=64)
        assert reply == expected and rouge_l(chat[-1]["content"], reply) > 0.3, reply
    finally:
        app.close()


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["loraplus", "pissa"])
def test_loraplus_and_pissa_compose_with_the_diffusion_objective(diffusion_store, recipe):
    from trainers.run import run_training

    adapter_id = run_training(method="masked-diffusion", base="mdm", snapshot="two",
                              adapter_name=f"mdm-{recipe}",
                              overrides={**SETTINGS, "max_steps": 120, "adapter": recipe,
                                         "logging_steps": 10, "generate_examples": 0})
    adapter = get_adapter(adapter_id)
    curve = json.loads((Path(adapter.path) / "train_metrics.json").read_text())["loss_curve"]
    losses = [point["loss"] for point in curve]
    # The diffusion loss is noisy step to step (a random mask ratio per sample): compare means.
    assert sum(losses[-3:]) < 0.7 * sum(losses[:3]), losses
    m = adapter.metrics
    assert m["adapter_recipe"] == recipe
    if recipe == "pissa":  # converted to a plain LoRA that loads on the untouched base
        assert m["pissa_conversion_max_logit_diff"] < 1e-3


def test_a_causal_trainer_refuses_a_diffusion_base_before_recording_anything(diffusion_store):
    from trainers.run import run_training

    runs = len(list_runs())
    with pytest.raises(TrainerError, match="masked-diffusion LM but trainer 'lora'"):
        run_training(method="lora", base="mdm", snapshot="two", overrides={"max_steps": 1})
    with pytest.raises(TrainerError, match="causal LM but trainer 'masked-diffusion'"):
        from trainers.base_model import register_base

        register_base("causal", str(Path(find_base("mdm").path)))
        run_training(method="masked-diffusion", base="causal", snapshot="two",
                     overrides={"max_steps": 1})
    assert len(list_runs()) == runs


def test_a_causal_model_registered_as_diffusion_is_refused_before_recording(diffusion_store,
                                                                            tmp_path):
    from trainers.base_model import register_base
    from trainers.run import run_training
    from trainers.testing import make_tiny_model

    register_base("not-mdm", make_tiny_model(tmp_path / "causal"), kind="masked_diffusion")
    runs = len(list_runs())
    with pytest.raises(TrainerError, match="no mask token"):
        run_training(method="masked-diffusion", base="not-mdm", snapshot="two",
                     overrides={"max_steps": 1})
    assert len(list_runs()) == runs
