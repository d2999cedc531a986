"""Write a Llama-family model, or a LoRA adapter of one, as a GGUF file that llama.cpp reads.

Everything goes through the ``gguf`` package (``GGUFWriter``, its tensor-name map, its Q8_0
quantizer and its merges reader), so names and layouts follow llama.cpp's own converter:
q/k projection rows are permuted into llama.cpp's rotary layout, 1-D tensors stay F32, and a
tied output head is left out (llama.cpp reuses the token embedding). The tokenizer (vocabulary,
merges, special tokens) and the chat template go into the file, so it runs with no other file.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from publishing.errors import ExportError

ProgressFn = Callable[[str], None]
SUPPORTED_MODEL_TYPES = ("llama",)
# transformers-only Jinja tags (they mark the assistant's tokens for training); llama.cpp's
# template engine does not know them, and they render nothing, so they are dropped.
GENERATION_TAGS = re.compile(r"\{%-?\s*(end)?generation\s*-?%\}")


@dataclass(frozen=True)
class Quantization:
    name: str  # as in file names and llama.cpp's --outtype: F16, Q8_0, F32
    tensor_type: Any  # gguf.GGMLQuantizationType for 2-D weights
    file_type: Any  # gguf.LlamaFileType written as general.file_type


def quantizations() -> dict[str, Quantization]:
    from gguf import GGMLQuantizationType as T
    from gguf import LlamaFileType as F

    return {"f16": Quantization("F16", T.F16, F.MOSTLY_F16),
            "q8_0": Quantization("Q8_0", T.Q8_0, F.MOSTLY_Q8_0),
            "f32": Quantization("F32", T.F32, F.ALL_F32)}


def quantization(name: str) -> Quantization:
    found = quantizations().get(name.lower())
    if found is None:
        raise ExportError(f"unknown quantization {name!r}; choose one of "
                          f"{', '.join(quantizations())}")
    return found


def lora_quantization(quant: Quantization) -> Quantization:
    """Adapters are written as 16-bit (F32 if asked): B's rows are a rank wide, rarely a whole
    Q8_0 block, and the adapter is small anyway."""
    return quant if quant.name == "F32" else quantization("f16")


def check_architecture(config: Any, who: str) -> None:
    """Refuse, in one line, what this writer cannot express faithfully."""
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ExportError(f"{who} is a {model_type!r} model; GGUF export supports the Llama "
                          "family (model_type llama) so far")
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if rope.get("rope_type", "default") not in ("default", None):
        raise ExportError(f"{who} uses {rope['rope_type']!r} rope scaling, which this GGUF "
                          "writer does not support yet")
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        raise ExportError(f"{who} has attention or MLP biases, which this GGUF writer does not "
                          "support yet")


def _rope_theta(config: Any) -> float:
    rope = getattr(config, "rope_parameters", None) or {}
    return float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0)))


def _head_dim(config: Any) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def permute_rows(weights: np.ndarray, n_head: int, n_head_kv: int | None = None) -> np.ndarray:
    """HF's rotary layout (halves) to llama.cpp's (interleaved pairs), on the output rows.

    The same reshuffle as llama.cpp's converter; transformers' GGUF reader undoes it.
    """
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def _rotary_heads(hf_name: str, config: Any) -> tuple[int, int] | None:
    if hf_name.endswith("q_proj.weight"):
        return config.num_attention_heads, config.num_attention_heads
    if hf_name.endswith("k_proj.weight"):
        return config.num_attention_heads, config.num_key_value_heads
    return None


def _add_tensor(writer: Any, name: str, data: np.ndarray, quant: Quantization) -> None:
    from gguf import GGMLQuantizationType as T
    from gguf import quants

    data = np.ascontiguousarray(data, dtype=np.float32)
    if data.ndim <= 1 or quant.tensor_type == T.F32:
        writer.add_tensor(name, data)  # norms stay F32, as llama.cpp keeps them
    elif quant.tensor_type == T.Q8_0 and data.shape[-1] % 32 == 0:
        writer.add_tensor(name, quants.quantize(data, T.Q8_0), raw_dtype=T.Q8_0)
    else:  # F16, and Q8_0 rows that are not whole 32-value blocks
        writer.add_tensor(name, data.astype(np.float16))


def _add_hparams(writer: Any, config: Any, name: str) -> None:
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    head_dim = _head_dim(config)
    writer.add_rope_dimension_count(head_dim)
    if head_dim != config.hidden_size // config.num_attention_heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_rope_freq_base(_rope_theta(config))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)


def _pre_tokenizer(tokenizer_json: dict[str, Any]) -> str | None:
    """llama.cpp's name for how text is split before BPE, from tokenizer.json's structure."""
    pre = tokenizer_json.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    byte_level = steps and steps[-1].get("type") == "ByteLevel" and steps[-1].get("use_regex",
                                                                                   True)
    if kinds == ["ByteLevel"] and byte_level:
        return "gpt2"
    if kinds == ["Digits", "ByteLevel"] and byte_level and steps[0].get("individual_digits"):
        return "smollm"  # SmolLM's split: every digit alone, then GPT-2's regex
    return None


def _add_tokenizer(writer: Any, tokenizer: Any, vocab_size: int, pre: str | None,
                   who: str) -> None:
    import gguf

    with tempfile.TemporaryDirectory(prefix="loraforge-tokenizer-") as tmp:
        tokenizer.save_pretrained(tmp)
        path = Path(tmp) / "tokenizer.json"
        if not path.is_file():
            raise ExportError(f"{who} has no fast tokenizer (tokenizer.json); GGUF export needs "
                              "one to write the vocabulary")
        data = json.loads(path.read_text(encoding="utf-8"))
        merges = gguf.SpecialVocab(tmp, load_merges=True, special_token_types=()).merges
    model = data.get("model") or {}
    if model.get("type") != "BPE" or model.get("byte_fallback") \
            or (data.get("decoder") or {}).get("type") != "ByteLevel":
        raise ExportError(f"{who} has a {model.get('type')} tokenizer; GGUF export supports "
                          "byte-level BPE (GPT-2 style) tokenizers so far")
    pre = pre or _pre_tokenizer(data)
    if pre is None:
        raise ExportError(f"{who}'s tokenizer splits text in a way this exporter does not "
                          "recognise (tokenizer.json pre_tokenizer); llama.cpp would tokenize "
                          "it differently")
    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(vocab_size):  # the embedding may be padded beyond the tokenizer
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(added[i].content)
            types.append(gguf.TokenType.CONTROL if added[i].special
                         else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for kind in ("bos", "eos", "unk", "pad"):
        token_id = getattr(tokenizer, f"{kind}_token_id", None)
        if token_id is not None:
            getattr(writer, f"add_{kind}_token_id")(token_id)
    probe = tokenizer("a")["input_ids"]
    writer.add_add_bos_token(bool(probe) and probe[0] == tokenizer.bos_token_id)
    writer.add_add_eos_token(False)
    template = chat_template(tokenizer)
    if template:
        writer.add_chat_template(template)


def chat_template(tokenizer: Any) -> str | None:
    template = getattr(tokenizer, "chat_template", None)
    return GENERATION_TAGS.sub("", template) if isinstance(template, str) else None


def _write(writer: Any, progress: bool) -> None:
    """Header, metadata, tensors; the callers' ``finally`` closes the file."""
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file(progress=progress)


def write_model(path: Path, model: Any, tokenizer: Any, *, name: str, quant: Quantization,
                pre: str | None = None, progress: bool = False) -> None:
    """The whole model (weights, hyper-parameters, tokenizer, chat template) as one GGUF."""
    import gguf

    config = model.config
    check_architecture(config, name)
    tensor_names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    try:
        writer.add_type(gguf.GGUFType.MODEL)
        _add_hparams(writer, config, name)
        writer.add_file_type(quant.file_type)
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        _add_tokenizer(writer, tokenizer, config.vocab_size, pre, name)
        for hf_name, tensor in model.state_dict().items():
            if tied and hf_name == "lm_head.weight":
                continue
            gguf_name = tensor_names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
            if gguf_name is None:
                raise ExportError(f"{name}: tensor {hf_name} has no GGUF name for llama; this "
                                  "model has parts llama.cpp's llama architecture lacks")
            data = tensor.detach().float().cpu().numpy()
            heads = _rotary_heads(hf_name, config)
            if heads:
                data = permute_rows(data, *heads)
            _add_tensor(writer, gguf_name, data, quant)
        _write(writer, progress)
    finally:
        writer.close()


@dataclass(frozen=True)
class LoraPair:
    """One adapted linear layer: its HF weight name, A (r × in), B (out × r) and PEFT's scale."""

    hf_name: str
    a: np.ndarray
    b: np.ndarray
    scale: float


def lora_alpha_for(pairs: Iterable[LoraPair]) -> float | None:
    """The one alpha llama.cpp can apply (scale = alpha / rank) to every pair, if there is one."""
    pairs = list(pairs)
    ranks = {p.a.shape[0] for p in pairs}
    scales = {round(p.scale, 12) for p in pairs}
    if len(ranks) == 1 and len(scales) == 1:
        return pairs[0].scale * pairs[0].a.shape[0]
    return None


def write_lora(path: Path, pairs: list[LoraPair], config: Any, *, name: str,
               quant: Quantization, progress: bool = False) -> float:
    """A LoRA adapter GGUF for llama.cpp's ``--lora`` and Ollama's ADAPTER; returns the alpha
    written. When rank or scale differs between layers (rank patterns, rsLoRA mixes), each B
    carries its own scale and alpha is 0, which llama.cpp reads as "scale 1"."""
    import gguf

    check_architecture(config, name)
    tensor_names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    alpha = lora_alpha_for(pairs)
    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    lora_quant = lora_quantization(quant)
    try:
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha or 0.0))
        writer.add_name(name)
        writer.add_file_type(lora_quant.file_type)
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        for pair in pairs:
            gguf_name = tensor_names.get_name(pair.hf_name, try_suffixes=(".weight",))
            if gguf_name is None:
                raise ExportError(f"{name}: adapted layer {pair.hf_name} has no GGUF name for "
                                  "llama")
            b = pair.b if alpha is not None else pair.b * pair.scale
            heads = _rotary_heads(pair.hf_name, config)
            if heads:
                b = permute_rows(b, *heads)  # A reads the input side, which is not permuted
            _add_tensor(writer, f"{gguf_name}.lora_a", pair.a, lora_quant)
            _add_tensor(writer, f"{gguf_name}.lora_b", b, lora_quant)
        _write(writer, progress)
    finally:
        writer.close()
    return float(alpha or 0.0)
