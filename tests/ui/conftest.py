"""Fixtures for the chat UI: a tiny real Llama with a ChatML tokenizer, two LoRA adapters, a store.

Nothing comes from the Hub: the tokenizer is trained here on a few sentences and the model is
randomly initialised, so replies are gibberish but deterministic under greedy decoding.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from registry.db import session_scope
from registry.models import Adapter, BaseModel

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SENTENCES = [
    "What is a low-rank adapter?",
    "A low-rank adapter adds two small matrices to a frozen layer.",
    "Fine-tuning changes the answers of a language model.",
    "The quick brown fox jumps over the lazy dog.",
    "Hello, how are you today? I am fine, thank you.",
    "Patients with high blood pressure should see a doctor.",
]
SPECIAL_TOKENS = ["<|pad|>", "<|im_start|>", "<|im_end|>"]


@dataclass(frozen=True)
class TinyModelFiles:
    base: Path
    adapter_a: Path
    adapter_b: Path
    adapter_pickle: Path


def _build_tokenizer(out: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(SENTENCES * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        bos_token="<|im_start|>",
    )
    fast.chat_template = CHATML_TEMPLATE
    fast.save_pretrained(out)
    return fast


def _build_base(out: Path) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _build_tokenizer(out)
    vocab = -(-len(tokenizer) // 32) * 32
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out, safe_serialization=True)


def _build_adapter(base: Path, out: Path, seed: int) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, use_safetensors=True)
    config = LoraConfig(
        r=8,
        lora_alpha=32,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        init_lora_weights=False,  # random B as well as A, so the adapter changes the output
        task_type="CAUSAL_LM",
    )
    get_peft_model(model, config).save_pretrained(out, safe_serialization=True)


def _pickle_copy(adapter: Path, out: Path) -> None:
    """The same adapter saved the old way: adapter_model.bin only, which we must refuse."""
    import torch
    from safetensors.torch import load_file

    out.mkdir(parents=True)
    (out / "adapter_config.json").write_text((adapter / "adapter_config.json").read_text())
    torch.save(load_file(adapter / "adapter_model.safetensors"), out / "adapter_model.bin")


@pytest.fixture(scope="session")
def tiny_model_files(tmp_path_factory: pytest.TempPathFactory) -> TinyModelFiles:
    root = tmp_path_factory.mktemp("tiny-chat-model")
    files = TinyModelFiles(
        base=root / "base",
        adapter_a=root / "adapter-a",
        adapter_b=root / "adapter-b",
        adapter_pickle=root / "adapter-pickle",
    )
    _build_base(files.base)
    _build_adapter(files.base, files.adapter_a, seed=1)
    _build_adapter(files.base, files.adapter_b, seed=2)
    _pickle_copy(files.adapter_a, files.adapter_pickle)
    return files


@pytest.fixture
def chat_store(home: Path, tiny_model_files: TinyModelFiles) -> TinyModelFiles:
    """The ``home`` store with base ``tiny-chat`` and adapters ``alpha:v1``, ``beta:v1``."""
    with session_scope() as session:
        base = BaseModel(name="tiny-chat", source="test", path=str(tiny_model_files.base))
        session.add(base)
        session.flush()
        for name, path in [
            ("alpha", tiny_model_files.adapter_a),
            ("beta", tiny_model_files.adapter_b),
        ]:
            session.add(
                Adapter(name=name, version=1, path=str(path), method="lora", base_model_id=base.id)
            )
    return tiny_model_files


def register_adapter(name: str, path: Path) -> None:
    with session_scope() as session:
        base = session.scalars(select(BaseModel).filter_by(name="tiny-chat")).one()
        session.add(
            Adapter(name=name, version=1, path=str(path), method="lora", base_model_id=base.id)
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def engine(chat_store: TinyModelFiles):
    from serving.engine import ChatEngine

    return ChatEngine(base="tiny-chat", device="cpu")


@pytest.fixture
def served(engine) -> Iterator[tuple[object, str]]:
    """The app launched in-process on a free localhost port: (engine, url)."""
    from ui.cli import launch

    app, url = launch(host="127.0.0.1", port=free_port(), block=False, engine=engine)
    try:
        yield engine, url
    finally:
        app.close(verbose=False)
