"""The chat engine: one resident base model with the registry's adapters attached on demand.

The base model is loaded once per engine. Adapters are attached with PEFT the first time they
are asked for and stay attached (up to ``max_adapters``, least recently used dropped first);
switching between them is ``set_adapter``, never a reload. One lock covers switching and
generation, streamed or not, so two requests on different adapters cannot see each other's
active adapter.
"""

from __future__ import annotations

import queue
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from core.device import resolve_device
from core.errors import LoraForgeError
from core.settings import get_settings
from registry.adapter_files import AdapterFileError, check_adapter_dir
from registry.adapters import AdapterRecord, list_adapters
from registry.bases import list_bases
from registry.db import ensure_schema

BASE_ONLY = "base model only"
DEFAULT_MAX_ADAPTERS = 8


class ChatError(LoraForgeError):
    """A chat request cannot be served: unknown adapter, unsafe weights, missing base model."""


def _resolve_base(name: str | None) -> tuple[str, str, str]:
    """The (name, what to load, kind) of the base model to serve: the one named, else a default."""
    records = {b.name: b for b in list_bases()}
    bases = {name: b.model_path for name, b in records.items()}
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
    return name, bases[name], records[name].kind


def _check_safetensors(choice: AdapterRecord) -> None:
    try:
        check_adapter_dir(Path(choice.path), f"adapter {choice.label}")
    except AdapterFileError as exc:
        raise ChatError(str(exc)) from exc


def _text_of(content: Any) -> str:
    """Plain text of a message's content: a string or a list of Gradio/OpenAI content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text", ""))
    if isinstance(content, list | tuple):
        return "".join(_text_of(part) for part in content)
    return ""


class _TokenQueue:
    """A ``generate`` streamer that hands new token ids to another thread.

    ``generate`` puts the prompt first, then each new token; ``end`` marks the finish (it may
    come twice when generation fails, which the reader never sees).
    """

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[list[int] | None] = queue.SimpleQueue()
        self._prompt_seen = False

    def put(self, value: Any) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self.queue.put([int(i) for i in value.reshape(-1).tolist()])

    def end(self) -> None:
        self.queue.put(None)


class ChatEngine:
    """Owns the models the chat UI talks to; safe to call from several threads."""

    def __init__(
        self,
        base: str | None = None,
        device: str | None = None,
        *,
        load_in_4bit: bool = False,
        max_adapters: int = DEFAULT_MAX_ADAPTERS,
        diffusion_block_length: int = 32,
    ) -> None:
        ensure_schema()
        self.base_name, self.base_path, self.base_kind = _resolve_base(base)
        # A masked-diffusion base answers through LLaDA's sampler, one token committed per step
        # in blocks of this many tokens, instead of generate().
        self.diffusion_block_length = diffusion_block_length
        self.device = resolve_device(device)
        if load_in_4bit and self.device != "cuda":
            raise ChatError("4-bit loading needs a CUDA GPU; drop --load-4bit on this machine")
        if max_adapters < 1:
            raise ChatError("max_adapters must be at least 1")
        self.load_in_4bit = load_in_4bit
        self.max_adapters = max_adapters
        self.base_loads = 0
        self.adapter_loads = 0
        self.model: Any = None
        self.tokenizer: Any = None
        # adapter label -> PEFT adapter name, least recently used first
        self._peft_names: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def load(self) -> None:
        """Load the base model now rather than on the first request (no-op once loaded)."""
        with self._lock:
            self._ensure_base()

    def activate(self, adapter_label: str) -> None:
        """Attach (if needed) and select an adapter now: a warm-up, and what benchmarks time."""
        choice, _ = self._prepare(adapter_label, [{"role": "user", "content": ""}])
        if choice is None:
            raise ChatError("activate takes an adapter label, not the base model")
        with self._lock:
            self._ensure_base()
            self._activate(choice)

    def list_choices(self) -> list[str]:
        """Picker labels: base only, then the adapters of this base, read fresh from the store."""
        labels = [a.label for a in list_adapters() if a.base_name == self.base_name]
        return [BASE_ONLY, *labels]

    def default_choice(self) -> str:
        """What the picker opens on: the newest adapter of this base, else the base alone."""
        return self.list_choices()[-1]

    def grouped_choices(self) -> list[tuple[str, str]]:
        """(shown, value) picker entries grouped by base: this engine's base first.

        Adapters of other bases are listed so users see they exist; choosing one answers with
        a message naming the ``--base`` to serve them with.
        """
        served = f"{self.base_name} (masked diffusion)" if self.is_diffusion else self.base_name
        own = [(f"{served} › {label}", label) for label in self.list_choices()]
        others = sorted(
            (a.base_name, a.label) for a in list_adapters() if a.base_name != self.base_name
        )
        return own + [(f"{base} › {label} (not served)", label) for base, label in others]

    @property
    def is_diffusion(self) -> bool:
        return self.base_kind == "masked_diffusion"

    @property
    def loaded_adapters(self) -> list[str]:
        """Labels of the adapters attached to the base now, least recently used first."""
        return list(self._peft_names)

    def generate(
        self,
        adapter_label: str | None,
        messages: list[dict[str, Any]],
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        top_p: float = 1.0,
    ) -> str:
        """The assistant's reply to ``messages``; greedy unless ``temperature`` > 0."""
        choice, chat = self._prepare(adapter_label, messages)
        with self._lock:
            self._ensure_base()
            if choice is None:
                return self._generate_base_only(chat, max_new_tokens, temperature, top_p)
            self._activate(choice)
            return self._run(chat, max_new_tokens, temperature, top_p)

    def stream(
        self,
        adapter_label: str | None,
        messages: list[dict[str, Any]],
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        top_p: float = 1.0,
    ) -> Iterator[str]:
        """The reply as it grows: each item is the whole text so far.

        A worker thread holds the lock from the switch to the last token, so a stream is
        never interleaved with another request's adapter; the caller only reads the queue.
        The first item comes one token after the request is served.
        """
        choice, chat = self._prepare(adapter_label, messages)
        tokens = _TokenQueue()
        failure: list[BaseException] = []

        def work() -> None:
            try:
                with self._lock:
                    self._ensure_base()
                    if choice is None:
                        self._generate_base_only(chat, max_new_tokens, temperature, top_p, tokens)
                    else:
                        self._activate(choice)
                        self._run(chat, max_new_tokens, temperature, top_p, tokens)
            except BaseException as exc:  # re-raised in the caller's thread below
                failure.append(exc)
            finally:
                tokens.end()

        worker = threading.Thread(target=work, name="loraforge-stream", daemon=True)
        worker.start()
        ids: list[int] = []
        shown = ""
        while (chunk := tokens.queue.get()) is not None:
            ids += chunk
            # Decode the whole reply each time: BPE merges and multi-byte characters make
            # per-token pieces unreliable, and replies are short enough for this to be cheap.
            text = self.tokenizer.decode(ids, skip_special_tokens=True).strip()
            if text and text != shown:
                shown = text
                yield text
        worker.join()
        if failure:
            raise failure[0]

    def _prepare(
        self, adapter_label: str | None, messages: list[dict[str, Any]]
    ) -> tuple[AdapterRecord | None, list[dict[str, str]]]:
        choice = None if adapter_label in (None, "", BASE_ONLY) else self._find(adapter_label)
        if choice is not None:
            _check_safetensors(choice)
        chat = [{"role": m["role"], "content": _text_of(m.get("content"))} for m in messages]
        if not chat:
            raise ChatError("nothing to answer: the conversation is empty")
        return choice, chat

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
        try:
            tokenizer = AutoTokenizer.from_pretrained(self.base_path,
                                                      trust_remote_code=self.is_diffusion)
        except (OSError, ValueError) as exc:  # a missing or damaged tokenizer: say which base
            raise ChatError(f"cannot load the tokenizer of base {self.base_name!r} from "
                            f"{self.base_path} ({str(exc).splitlines()[0]}); re-add the base "
                            "or serve another with --base") from exc
        if tokenizer.chat_template is None:
            raise ChatError(f"base model {self.base_name!r} has no chat template in its tokenizer")
        extra: dict[str, Any] = {}
        if self.load_in_4bit:
            from transformers import BitsAndBytesConfig

            extra = {
                "quantization_config": BitsAndBytesConfig(
                    load_in_4bit=True, bnb_4bit_compute_dtype=dtype, bnb_4bit_quant_type="nf4"
                ),
                "device_map": {"": 0},
            }
        if self.is_diffusion:
            from trainers.diffusion.loading import load_diffusion_model

            model = load_diffusion_model(self.base_path, dtype=dtype, **extra)
        else:
            model = AutoModelForCausalLM.from_pretrained(
                self.base_path, dtype=dtype, use_safetensors=True, **extra
            )
        if not self.load_in_4bit:  # a quantized model is placed by device_map and cannot move
            model.to(self.device)
        model.eval()
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
            self.adapter_loads += 1
        self._peft_names.move_to_end(choice.label)
        self.model.set_adapter(name)
        while len(self._peft_names) > self.max_adapters:
            _, evicted = self._peft_names.popitem(last=False)
            self.model.delete_adapter(evicted)

    def _generate_base_only(
        self,
        chat: list[dict[str, str]],
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        streamer: Any = None,
    ) -> str:
        from peft import PeftModel

        if isinstance(self.model, PeftModel):
            with self.model.disable_adapter():
                return self._run(chat, max_new_tokens, temperature, top_p, streamer)
        return self._run(chat, max_new_tokens, temperature, top_p, streamer)

    def _run(
        self,
        chat: list[dict[str, str]],
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        streamer: Any = None,
    ) -> str:
        if self.is_diffusion:
            return self._run_diffusion(chat, max_new_tokens, temperature, streamer)
        from trainers.generate import decode_answer, generate_ids

        input_ids = self._prompt_ids(chat, max_new_tokens)
        new_tokens = generate_ids(self.model, self.tokenizer, input_ids, max_new_tokens,
                                  temperature=temperature, top_p=top_p, streamer=streamer)
        return decode_answer(self.tokenizer, new_tokens)

    def _run_diffusion(
        self,
        chat: list[dict[str, str]],
        max_new_tokens: int,
        temperature: float,
        streamer: _TokenQueue | None,
    ) -> str:
        from trainers.diffusion.loading import answer_ids
        from trainers.diffusion.sampler import SamplerConfig

        sampler = SamplerConfig.for_length(max_new_tokens, self.diffusion_block_length,
                                           temperature=temperature)
        sent = 0

        def on_prefix(ids: list[int]) -> None:
            nonlocal sent
            if streamer is not None and len(ids) > sent:
                streamer.queue.put(ids[sent:])
                sent = len(ids)

        return answer_ids(self.model, self.tokenizer, self._prompt_ids(chat, max_new_tokens),
                          sampler, on_prefix=on_prefix)

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
