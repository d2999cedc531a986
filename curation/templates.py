"""Chat templates: the tokenizer's own, or a built-in for tokenizers that ship none.

A built-in renders a chat as segments, each marked as trained (the assistant's reply and its
end-of-turn marker) or not (everything else). Tokenizing segment by segment makes the loss mask
exact by construction, with no guessing where the answer starts in the token stream.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from curation.errors import CurationError

Segment = tuple[str, bool]  # (text, is_assistant_target)
Messages = list[dict[str, str]]

TOKENIZER_TEMPLATE = "tokenizer"
AUTO = "auto"


def _system_and_turns(messages: Messages) -> tuple[str | None, Messages]:
    if messages and messages[0]["role"] == "system":
        return messages[0]["content"], messages[1:]
    return None, messages


def _llama2(messages: Messages, bos: str, eos: str) -> list[Segment]:
    """``<s>[INST] <<SYS>>\\n{system}\\n<</SYS>>\\n\\n{user} [/INST] {answer} </s>`` per turn."""
    system, turns = _system_and_turns(messages)
    segments: list[Segment] = []
    first_user = True
    for message in turns:
        if message["role"] == "user":
            content = message["content"].strip()
            if system and first_user:
                content = f"<<SYS>>\n{system.strip()}\n<</SYS>>\n\n{content}"
            segments.append((f"{bos}[INST] {content} [/INST] ", False))
            first_user = False
        elif message["role"] == "assistant":
            segments.append((f"{message['content'].strip()} {eos}", True))
    return segments


def _llama3(messages: Messages, bos: str, eos: str) -> list[Segment]:
    """Llama-3.1 headers: ``<|start_header_id|>role<|end_header_id|>\\n\\n{text}<|eot_id|>``."""
    segments: list[Segment] = [("<|begin_of_text|>", False)]
    for message in messages:
        header = f"<|start_header_id|>{message['role']}<|end_header_id|>\n\n"
        if message["role"] == "assistant":
            segments.append((header, False))
            segments.append((f"{message['content'].strip()}<|eot_id|>", True))
        else:
            segments.append((f"{header}{message['content'].strip()}<|eot_id|>", False))
    return segments


def _chatml(messages: Messages, bos: str, eos: str) -> list[Segment]:
    """``<|im_start|>role\\n{text}<|im_end|>\\n``; the newline after the reply is not trained."""
    segments: list[Segment] = []
    for message in messages:
        if message["role"] == "assistant":
            segments.append(("<|im_start|>assistant\n", False))
            segments.append((f"{message['content']}<|im_end|>", True))
            segments.append(("\n", False))
        else:
            segments.append((f"<|im_start|>{message['role']}\n{message['content']}<|im_end|>\n",
                             False))
    return segments


ALPACA_PREAMBLE = ("Below is an instruction that describes a task. "
                   "Write a response that appropriately completes the request.\n\n")


def _alpaca(messages: Messages, bos: str, eos: str) -> list[Segment]:
    """Stanford Alpaca's prompt; a system message replaces the preamble. Single-turn at heart:
    later turns repeat the instruction/response pair."""
    system, turns = _system_and_turns(messages)
    segments: list[Segment] = [(f"{bos}{system.strip()}\n\n" if system else
                                f"{bos}{ALPACA_PREAMBLE}", False)]
    for message in turns:
        if message["role"] == "user":
            segments.append((f"### Instruction:\n{message['content'].strip()}\n\n### Response:\n",
                             False))
        elif message["role"] == "assistant":
            segments.append((f"{message['content'].strip()}{eos}", True))
            segments.append(("\n\n", False))
    if segments[-1] == ("\n\n", False):
        segments.pop()
    return segments


@dataclass(frozen=True)
class BuiltinTemplate:
    name: str
    description: str
    render: Callable[[Messages, str, str], list[Segment]]
    default_bos: str
    default_eos: str


BUILTIN_TEMPLATES: dict[str, BuiltinTemplate] = {
    t.name: t for t in (
        BuiltinTemplate("llama2", "Llama-2 [INST] … [/INST]", _llama2, "<s>", "</s>"),
        BuiltinTemplate("llama3", "Llama-3.1 header ids", _llama3, "", "<|eot_id|>"),
        BuiltinTemplate("chatml", "ChatML <|im_start|> … <|im_end|>", _chatml, "", ""),
        BuiltinTemplate("alpaca", "Alpaca ### Instruction / ### Response", _alpaca, "", "</s>"),
    )
}
TEMPLATE_CHOICES = (AUTO, TOKENIZER_TEMPLATE, *BUILTIN_TEMPLATES)


def check_template(name: str) -> str:
    """The name if it is a known template; otherwise an error listing the choices."""
    if name not in TEMPLATE_CHOICES:
        raise CurationError(f"unknown chat template {name!r}; choose one of "
                           f"{', '.join(TEMPLATE_CHOICES)}")
    return name


def resolve_template(name: str, tokenizer) -> str:
    """``auto`` → the tokenizer's own template when it has one, else ChatML."""
    check_template(name)
    has_own = bool(getattr(tokenizer, "chat_template", None))
    if name == AUTO:
        return TOKENIZER_TEMPLATE if has_own else "chatml"
    if name == TOKENIZER_TEMPLATE and not has_own:
        raise CurationError("this tokenizer has no chat template; pick a built-in with "
                           f"--template ({', '.join(BUILTIN_TEMPLATES)})")
    return name


def builtin_segments(name: str, messages: Messages, tokenizer=None) -> list[Segment]:
    """A chat as trained/untrained text segments under built-in template ``name``.

    BOS/EOS are the tokenizer's own where it has them, so generation stops where training
    taught it to; the template family's literal tokens otherwise.
    """
    template = BUILTIN_TEMPLATES[check_template(name)] if name in BUILTIN_TEMPLATES else None
    if template is None:
        raise CurationError(f"{name!r} is not a built-in template; choose one of "
                           f"{', '.join(BUILTIN_TEMPLATES)}")
    bos = getattr(tokenizer, "bos_token", None) or template.default_bos
    eos = getattr(tokenizer, "eos_token", None) or template.default_eos
    if name == "llama3":
        bos, eos = "", ""  # Llama-3.1 spells out its own markers
    return template.render(messages, bos, eos)


def render_text(name: str, messages: Messages, tokenizer=None) -> str:
    """The whole chat as one string under built-in template ``name``."""
    return "".join(text for text, _ in builtin_segments(name, messages, tokenizer))
