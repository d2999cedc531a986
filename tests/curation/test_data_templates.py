"""Chat templates: each built-in renders its family's format and trains exactly the replies."""

from __future__ import annotations

import pytest

from curation.errors import CurationError
from curation.formatting import IGNORE_INDEX, encode_chat, pack
from curation.templates import check_template, render_text
from trainers.base_model import train_tokenizer

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is gout?"},
    {"role": "assistant", "content": "A kind of arthritis."},
    {"role": "user", "content": "Is it painful?"},
    {"role": "assistant", "content": "Yes, very."},
]
MARKERS = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
           "<|im_start|>", "<|im_end|>"]

EXPECTED = {
    "llama2": (
        "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nWhat is gout? [/INST] A kind of arthritis. "
        "</s><s>[INST] Is it painful? [/INST] Yes, very. </s>",
        "A kind of arthritis. </s>Yes, very. </s>",
    ),
    "llama3": (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWhat is gout?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nA kind of arthritis.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nIs it painful?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nYes, very.<|eot_id|>",
        "A kind of arthritis.<|eot_id|>Yes, very.<|eot_id|>",
    ),
    "chatml": (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is gout?<|im_end|>\n"
        "<|im_start|>assistant\nA kind of arthritis.<|im_end|>\n<|im_start|>user\n"
        "Is it painful?<|im_end|>\n<|im_start|>assistant\nYes, very.<|im_end|>\n",
        "A kind of arthritis.<|im_end|>Yes, very.<|im_end|>",
    ),
    "alpaca": (
        "<s>Be brief.\n\n### Instruction:\nWhat is gout?\n\n### Response:\n"
        "A kind of arthritis.</s>\n\n### Instruction:\nIs it painful?\n\n### Response:\n"
        "Yes, very.</s>",
        "A kind of arthritis.</s>Yes, very.</s>",
    ),
}


@pytest.fixture(scope="module")
def plain_tokenizer():
    """A byte-level BPE with Llama's <s>/</s> and every template marker, and no chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<s>", "</s>", *MARKERS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(["What is gout? A kind of arthritis. Is it painful? Yes, very."] * 20,
                            trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   additional_special_tokens=MARKERS)


def _decode(tokenizer, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def _kept_and_masked(encoded) -> tuple[list[int], list[int]]:
    pairs = list(zip(encoded.input_ids, encoded.labels, strict=True))
    return ([i for i, label in pairs if label != IGNORE_INDEX],
            [i for i, label in pairs if label == IGNORE_INDEX])


@pytest.mark.parametrize("template", sorted(EXPECTED))
def test_builtin_template_renders_its_format_and_trains_only_the_replies(plain_tokenizer,
                                                                         template):
    full, trained = EXPECTED[template]
    assert render_text(template, CHAT, plain_tokenizer) == full

    encoded = encode_chat(CHAT, plain_tokenizer, template, max_length=None)
    assert _decode(plain_tokenizer, encoded.input_ids) == full
    kept, masked = _kept_and_masked(encoded)
    assert _decode(plain_tokenizer, kept) == trained
    assert _decode(plain_tokenizer, masked) == _without_replies(full, template)
    pairs = zip(encoded.input_ids, encoded.labels, strict=True)
    assert all(label in (IGNORE_INDEX, i) for i, label in pairs)


def _without_replies(full: str, template: str) -> str:
    end = {"llama2": " </s>", "llama3": "<|eot_id|>", "chatml": "<|im_end|>", "alpaca": "</s>"}
    for reply in ("A kind of arthritis.", "Yes, very."):
        full = full.replace(reply + end[template], "", 1)
    return full


def test_auto_uses_the_tokenizers_own_template_and_trains_reply_and_end_of_turn():
    tokenizer = train_tokenizer(["What is gout? A kind of arthritis."] * 20, vocab_size=300)
    encoded = encode_chat(CHAT, tokenizer, "auto", max_length=None)
    kept, _ = _kept_and_masked(encoded)
    assert _decode(tokenizer, kept) == "A kind of arthritis.<|im_end|>\nYes, very.<|im_end|>\n"
    assert _decode(tokenizer, encoded.input_ids) == tokenizer.apply_chat_template(
        CHAT, tokenize=False)


def test_truncation_cuts_to_max_length_and_says_so(plain_tokenizer):
    encoded = encode_chat(CHAT, plain_tokenizer, "chatml", max_length=12)
    assert len(encoded.input_ids) == len(encoded.labels) == 12
    assert encoded.truncated and encoded.full_length > 12
    assert not encode_chat(CHAT, plain_tokenizer, "chatml").truncated  # 512 by default


def test_packing_fills_rows_without_padding_and_restarts_positions(plain_tokenizer):
    examples = [encode_chat(CHAT[:3], plain_tokenizer, "chatml") for _ in range(5)]
    n = len(examples[0].input_ids)
    rows = pack(examples, max_length=2 * n + 1)
    assert [row.lengths for row in rows] == [[n, n], [n, n], [n]]
    assert rows[0].position_ids == list(range(n)) * 2
    assert rows[0].labels == examples[0].labels * 2
    assert sum(len(r.input_ids) for r in rows) == 5 * n


def test_unknown_template_names_the_choices():
    with pytest.raises(CurationError, match="unknown chat template 'vicuna'; choose one of auto"):
        check_template("vicuna")
