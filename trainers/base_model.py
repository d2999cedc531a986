"""Base models: build a tiny Llama from the store's own text, or register an existing one.

The tiny base exists so the whole pipeline (train, compare, chat, publish) runs on a laptop CPU
in minutes without downloading anything. It is a real ``LlamaForCausalLM`` with a real
byte-level BPE tokenizer and a ChatML template, so code that works on it works on Hub models.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from core.settings import get_settings
from registry import bases
from registry.db import ensure_schema
from registry.models import ModelKind
from trainers.errors import TrainerError

BOS, EOS, PAD, IM_START = "<|endoftext|>", "<|im_end|>", "<pad>", "<|im_start|>"
MASK = "<|mdm_mask|>"  # LLaDA's name for the token a masked-diffusion LM denoises
KINDS = ("causal", "masked_diffusion")

# ChatML. The assistant's text and its <|im_end|> sit inside {% generation %} so TRL's
# assistant_only_loss trains the answer *and* the stop token, and nothing else.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{ '<|im_start|>assistant\n' }}"
    "{%- generation -%}{{ message['content'] + '<|im_end|>' }}{%- endgeneration -%}"
    "{{ '\n' }}"
    "{%- else -%}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}"
)

MAX_CORPUS_CHARS = 8_000_000  # more text than 200 steps can read; caps tokenizer training time
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

ProgressFn = Callable[[int, int, float], None]  # (step, total steps, loss)


def _corpus(limit_chars: int = MAX_CORPUS_CHARS) -> list[str]:
    texts, size = [], 0
    for text in bases.iter_store_texts():
        texts.append(text)
        size += len(text)
        if size >= limit_chars:
            break
    return texts


def _snapshot_train_texts(snapshot: str) -> list[str]:
    """The train split of a snapshot as "question\nanswer" texts (the test split stays unseen)."""
    from registry.snapshots import find_snapshot

    record = find_snapshot(snapshot)
    if record is None or not record.path:
        raise TrainerError(f"no dataset snapshot called {snapshot!r}; see `loraforge data list`")
    texts = []
    with open(Path(record.path) / "train.jsonl", encoding="utf-8") as lines:
        for line in lines:
            messages = json.loads(line)["messages"]
            texts.append("\n".join(m["content"] for m in messages if m["role"] != "system"))
    return texts


def train_tokenizer(texts: Iterable[str], vocab_size: int, with_mask_token: bool = False):
    """A byte-level BPE tokenizer with ChatML special tokens (and a mask token for a
    masked-diffusion LM), as a transformers tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS, EOS, PAD, IM_START, *([MASK] if with_mask_token else [])],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodable: no <unk>
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
        additional_special_tokens=[IM_START], mask_token=MASK if with_mask_token else None,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def make_config(tokenizer, hidden_size: int, layers: int, seq_len: int):
    from transformers import LlamaConfig

    if hidden_size < 32 or hidden_size % 32:
        raise TrainerError(f"hidden size must be a positive multiple of 32, got {hidden_size}")
    if layers < 1:
        raise TrainerError(f"layers must be at least 1, got {layers}")
    # Every size a multiple of 32: friendly to kernels and to LoRA ranks people try.
    vocab = math.ceil(len(tokenizer) / 32) * 32
    return LlamaConfig(
        vocab_size=vocab, hidden_size=hidden_size, intermediate_size=4 * hidden_size,
        num_hidden_layers=layers, num_attention_heads=hidden_size // 32,
        num_key_value_heads=hidden_size // 32, head_dim=32,
        max_position_embeddings=max(2 * seq_len, 1024), tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _token_stream(tokenizer, texts: list[str]) -> torch.Tensor:
    ids: list[int] = []
    for encoded in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        ids.extend([tokenizer.bos_token_id, *encoded, tokenizer.eos_token_id])
    return torch.tensor(ids, dtype=torch.long)


def pretrain(
    model,
    stream: torch.Tensor,
    *,
    steps: int,
    seq_len: int,
    batch_size: int = 8,
    lr: float = 3e-3,
    seed: int = 0,
    progress: ProgressFn | None = None,
    loss_fn: Callable | None = None,
) -> list[dict[str, float]]:
    """Training on random windows of ``stream``; returns the loss curve.

    The loss is the causal-LM loss unless ``loss_fn(model, batch)`` gives another one.
    """
    generator = torch.Generator().manual_seed(seed)
    window = min(seq_len, len(stream) - 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.95))
    warmup = max(1, steps // 10)

    def schedule(step: int) -> float:  # linear warmup, cosine decay to a tenth
        if step < warmup:
            return (step + 1) / warmup
        return 0.1 + 0.45 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    curve = []
    model.train()
    for step in range(1, steps + 1):
        starts = torch.randint(0, len(stream) - window, (batch_size,), generator=generator)
        batch = torch.stack([stream[s : s + window] for s in starts.tolist()])
        loss = loss_fn(model, batch) if loss_fn else model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        curve.append({"step": step, "loss": round(loss.item(), 4)})
        if progress is not None:
            progress(step, steps, loss.item())
    model.eval()
    return curve


def build_tiny_base(
    name: str = "tiny",
    steps: int = 200,
    vocab_size: int = 2048,
    hidden_size: int = 128,
    layers: int = 4,
    seq_len: int = 256,
    seed: int = 0,
    progress: ProgressFn | None = None,
    pretrain_snapshot: str | None = None,
    kind: str = "causal",
) -> int:
    """Train a tokenizer and a small Llama on the store's text, save, record; returns the id.

    The tokenizer always learns from the whole store. With ``pretrain_snapshot`` the model is
    pretrained on that snapshot's train split only: a model this small cannot learn the whole
    store in a CPU-minute, but it can learn a few dozen answers well enough for a fine-tuned
    adapter's replies to be recognisable. ``kind="masked_diffusion"`` builds a bidirectional
    LLaDA-style model with a mask token instead, pretrained with LLaDA's objective.
    """
    ensure_schema()
    if kind not in KINDS:
        raise TrainerError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if steps < 1:
        raise TrainerError(f"steps must be at least 1, got {steps}")
    if vocab_size < 300:
        raise TrainerError(f"vocab size must be at least 300 (256 bytes + merges), "
                           f"got {vocab_size}")
    if bases.find_base(name) is not None:
        raise TrainerError(f"a base model called {name!r} exists; pick another --name")
    texts = _corpus()
    if not texts:
        raise TrainerError("the store has no text to train a base on; crawl some first "
                           "(`loraforge crawl ...`)")

    started = time.perf_counter()
    torch.manual_seed(seed)
    diffusion = kind == "masked_diffusion"
    tokenizer = train_tokenizer(texts, vocab_size, with_mask_token=diffusion)
    config = make_config(tokenizer, hidden_size, layers, seq_len)
    model, loss_fn = _diffusion_model(config, tokenizer, seed) if diffusion \
        else (_causal_model(config, tokenizer), None)
    pretrain_texts = _snapshot_train_texts(pretrain_snapshot) if pretrain_snapshot else texts
    stream = _token_stream(tokenizer, pretrain_texts)
    curve = pretrain(model, stream, steps=steps, seq_len=seq_len, seed=seed, progress=progress,
                     loss_fn=loss_fn)

    final_dir = get_settings().bases_dir / name
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=final_dir.parent))
    try:
        model.save_pretrained(tmp_dir, safe_serialization=True)
        tokenizer.save_pretrained(tmp_dir)
        (tmp_dir / "pretrain_loss.json").write_text(json.dumps(curve))
        if final_dir.exists():  # files of a base whose row is gone; the store is the truth
            shutil.rmtree(final_dir)
        tmp_dir.rename(final_dir)
        n_params = sum(p.numel() for p in model.parameters())
        return bases.record_base(
            name=name, source="built:tiny", path=str(final_dir),
            architecture=type(model).__name__, parameters=n_params, kind=ModelKind(kind),
            config={
                "steps": steps, "vocab_size": config.vocab_size, "hidden_size": hidden_size,
                "layers": layers, "seq_len": seq_len, "seed": seed,
                "corpus_texts": len(pretrain_texts), "pretrain_snapshot": pretrain_snapshot,
                "corpus_tokens": int(len(stream)), "final_loss": curve[-1]["loss"],
                "build_seconds": round(time.perf_counter() - started, 1),
            },
        )
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        shutil.rmtree(final_dir, ignore_errors=True)
        raise


def _causal_model(config, tokenizer):
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model


def _diffusion_model(config, tokenizer, seed: int):
    """The tiny LLaDA-style model and its pretraining loss (masks drawn from a seeded stream)."""
    from trainers.diffusion.modeling_tiny_mdm import TinyMdmConfig, TinyMdmModelLM
    from trainers.diffusion.objective import pretrain_loss

    settings = {k: v for k, v in config.to_dict().items()
                if k not in ("model_type", "transformers_version", "architectures")}
    mdm_config = TinyMdmConfig(mask_token_id=tokenizer.mask_token_id, **settings)
    model = TinyMdmModelLM(mdm_config)
    masks = torch.Generator().manual_seed(seed + 1)
    return model, lambda m, batch: pretrain_loss(m, batch, tokenizer.mask_token_id,
                                                 generator=masks)


def register_base(name: str, source: str, kind: str = "causal") -> int:
    """Record a Hub id or a local model directory as a base model; returns its id.

    ``kind="masked_diffusion"`` marks a LLaDA-style model, whose own modeling code will be run
    (``trust_remote_code``) when it is loaded.
    """
    ensure_schema()
    if kind not in KINDS:
        raise TrainerError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if bases.find_base(name) is not None:
        raise TrainerError(f"a base model called {name!r} exists; pick another name")
    local = Path(source).expanduser()
    if local.exists():
        config_file = local / "config.json"
        if not config_file.is_file():
            raise TrainerError(f"{local} has no config.json; point SOURCE at a saved "
                               "transformers model directory")
        config = json.loads(config_file.read_text())
        return bases.record_base(
            name=name, source=str(local.resolve()), path=str(local.resolve()),
            architecture=(config.get("architectures") or [None])[0], parameters=None,
            config=config, kind=ModelKind(kind),
        )
    if not HUB_ID.match(source):
        raise TrainerError(f"{source!r} is neither a local directory nor a Hub id like "
                           "'HuggingFaceTB/SmolLM2-135M'")
    # A Hub id is recorded as given; it is downloaded (and checked) when a run first loads it.
    return bases.record_base(name=name, source=source, path=None, architecture=None,
                             parameters=None, config={}, kind=ModelKind(kind))
