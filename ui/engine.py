"""The chat engine: one resident base model with the registry's adapters attached on demand.

The base model is loaded once per engine. Adapters are attached with PEFT the first time they
are asked for and stay attached; switching between them is ``set_adapter``, never a reload.
One lock covers switching and generation, so two requests on different adapters cannot see
each other's active adapter.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

from registry.adapters import AdapterRecord, list_adapters
from registry.bases import list_bases
from registry.db import ensure_schema
from registry.errors import LoraForgeError
from registry.settings import get_settings, resolve_device

BASE_ONLY = "base model only"
SAFETENSORS_WEIGHTS = "adapter_model.safetensors"


class ChatError(LoraForgeError):
    """A chat request cannot be served: unknown adapter, unsafe weights, missing base model."""


def _resolve_base(name: str | None) -> tuple[str, str]:
    """The (name, what to load) of the base model to serve: the one named, else a default."""
    bases = {b.name: b.model_path for b in list_bases()}
    if name is None:
        adapters = list_adapters()
        default = get_settings().base_model
        if default in bases:
            name = default
        elif adapters:
            name = adapters[-1].base_name
        elif len(bases) == 1:
            name = next(iter(bases))
        else:
            raise ChatError(
                "no base model to chat with; register one (`loraforge base add`) "
                "or pass --base NAME"
            )
    if name not in bases:
        known = ", ".join(sorted(bases)) or "none"
        raise ChatError(f"unknown base model {name!r} (registered: {known})")
    return name, bases[name]


def _check_safetensors(choice: AdapterRecord) -> None:
    adapter_dir = Path(choice.path)
    if not (adapter_dir / SAFETENSORS_WEIGHTS).is_file():
        found = (
            "a pickle adapter_model.bin"
            if (adapter_dir / "adapter_model.bin").exists()
            else ("no weights")
        )
        raise ChatError(
            f"adapter {choice.label} at {adapter_dir} has {found} but no {SAFETENSORS_WEIGHTS}; "
            "LoRAForge loads safetensors only: re-save it with "
            "`save_pretrained(..., safe_serialization=True)`"
        )


def _text_of(content: Any) -> str:
    """Plain text of a message's content: a string or a list of Gradio/OpenAI content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text", ""))
    if isinstance(content, list | tuple):
        return "".join(_text_of(part) for part in content)
    return ""


class ChatEngine:
    """Owns the models the chat UI talks to; safe to call from several threads."""

    def __init__(self, base: str | None = None, device: str | None = None) -> None:
        ensure_schema()
        self.base_name, self.base_path = _resolve_base(base)
        self.device = resolve_device(device)
        self.base_loads = 0
        self.model: Any = None
        self.tokenizer: Any = None
        self._peft_names: dict[str, str] = {}  # adapter label -> PEFT adapter name
        self._lock = threading.Lock()

    def load(self) -> None:
        """Load the base model now rather than on the first request (no-op once loaded)."""
        with self._lock:
            self._ensure_base()

    def list_choices(self) -> list[str]:
        """Picker labels: base only, then the adapters of this base, read fresh from the store."""
        labels = [a.label for a in list_adapters() if a.base_name == self.base_name]
        return [BASE_ONLY, *labels]

    def generate(
        self,
        adapter_label: str | None,
        messages: list[dict[str, Any]],
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        top_p: float = 1.0,
    ) -> str:
        """The assistant's reply to ``messages``; greedy unless ``temperature`` > 0."""
        choice = None if adapter_label in (None, "", BASE_ONLY) else self._find(adapter_label)
        if choice is not None:
            _check_safetensors(choice)
        chat = [{"role": m["role"], "content": _text_of(m.get("content"))} for m in messages]
        if not chat:
            raise ChatError("nothing to answer: the conversation is empty")
        with self._lock:
            self._ensure_base()
            if choice is None:
                return self._generate_base_only(chat, max_new_tokens, temperature, top_p)
            self._activate(choice)
            return self._run(chat, max_new_tokens, temperature, top_p)

    def _find(self, label: str) -> AdapterRecord:
        for choice in list_adapters():
            if choice.label == label:
                if choice.base_name != self.base_name:
                    raise ChatError(
                        f"adapter {label} was trained on {choice.base_name!r}, but this chat "
                        f"serves {self.base_name!r}; start it with --base {choice.base_name}"
                    )
                return choice
        raise ChatError(f"unknown adapter {label!r}; press refresh to reload the list")

    def _ensure_base(self) -> None:
        if self.model is not None:
            return
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        tokenizer = AutoTokenizer.from_pretrained(self.base_path)
        if tokenizer.chat_template is None:
            raise ChatError(f"base model {self.base_name!r} has no chat template in its tokenizer")
        model = AutoModelForCausalLM.from_pretrained(
            self.base_path, dtype=dtype, use_safetensors=True
        )
        model.to(self.device).eval()
        self.model, self.tokenizer = model, tokenizer
        self.base_loads += 1

    def _activate(self, choice: AdapterRecord) -> None:
        from peft import PeftModel

        name = self._peft_names.get(choice.label)
        if name is None:
            # PEFT adapter names become module keys, which may not contain dots.
            name = f"a{choice.id}_" + re.sub(r"\W", "_", choice.label)
            if isinstance(self.model, PeftModel):
                self.model.load_adapter(choice.path, adapter_name=name)
            else:
                self.model = PeftModel.from_pretrained(self.model, choice.path, adapter_name=name)
            self.model.eval()
            self._peft_names[choice.label] = name
        self.model.set_adapter(name)

    def _generate_base_only(
        self, chat: list[dict[str, str]], max_new_tokens: int, temperature: float, top_p: float
    ) -> str:
        from peft import PeftModel

        if isinstance(self.model, PeftModel):
            with self.model.disable_adapter():
                return self._run(chat, max_new_tokens, temperature, top_p)
        return self._run(chat, max_new_tokens, temperature, top_p)

    def _run(
        self, chat: list[dict[str, str]], max_new_tokens: int, temperature: float, top_p: float
    ) -> str:
        import torch

        input_ids = self._prompt_ids(chat, max_new_tokens)
        sampling: dict[str, Any] = {"do_sample": False}
        if temperature > 0:
            sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p}
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            pad_id = self.tokenizer.eos_token_id
        with torch.inference_mode():
            output = self.model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=max_new_tokens,
                pad_token_id=pad_id,
                **sampling,
            )
        new_tokens = output[0, input_ids.shape[1] :]
        return self.tokenizer.decode(new_tokens, skip_special_tokens=True).strip()

    def _prompt_ids(self, chat: list[dict[str, str]], max_new_tokens: int) -> Any:
        """Prompt token ids, dropping the oldest turns until prompt and reply fit the context."""
        limit = getattr(self.model.config, "max_position_embeddings", None) or 1_000_000
        while True:
            ids = self.tokenizer.apply_chat_template(
                chat, add_generation_prompt=True, return_tensors="pt", return_dict=True
            )["input_ids"]
            if ids.shape[1] + max_new_tokens <= limit:
                return ids.to(self.device)
            droppable = [i for i, m in enumerate(chat[:-1]) if m["role"] != "system"]
            if not droppable:
                raise ChatError(
                    f"the message is too long for {self.base_name!r} ({ids.shape[1]} tokens "
                    f"plus {max_new_tokens} new ones > {limit}); shorten it or lower max tokens"
                )
            chat = chat[: droppable[0]] + chat[droppable[0] + 1 :]
