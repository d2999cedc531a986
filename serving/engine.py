"""The chat engine: one resident base model with the registry's adapters attached on demand.

The base model is loaded once per engine. Adapters are attached with PEFT the first time they
are asked for and stay attached (up to ``max_adapters``, least recently used dropped first);
switching between them is ``set_adapter``, never a reload. Requests are queued and decoded in
batches, each row on its own adapter (serving/batching.py); one thread decodes, and one lock
covers loading, switching and decoding, so no request sees another's adapter. While one plain
LoRA adapter serves every running row, it is folded into the base weights until another adapter
or the base is asked for (serving/merging.py): its rows then equal the unmerged ones to float
rounding, like the one-row path of serving/row_adapters.py; base rows and mixed batches always
run on the base's own weights, bit for bit.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from core.device import DTYPES, resolve_device, resolve_dtype
from core.settings import get_settings
from registry.adapter_files import AdapterFileError, check_adapter_dir, not_plain_lora
from registry.adapters import AdapterRecord, list_adapters
from registry.bases import list_bases
from registry.db import ensure_schema
from serving.batching import BatchScheduler, ChatRequest, ReplyStream, run_on_passing_thread
from serving.errors import ChatError
from serving.limits import DEFAULT_MAX_ADAPTERS, DEFAULT_MAX_BATCH, DEFAULT_PREFIX_CACHE_MB
from serving.merging import MERGE_MIN_TOKENS, LoneAdapterMerge, MergeError
from serving.prefix_cache import PrefixCache
from serving.row_adapters import BASE, RowAdapters, in_linear_layers_only, install

BASE_ONLY = "base model only"
_UNKNOWN = "?"  # no PEFT adapter name contains it

logger = logging.getLogger(__name__)


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


def _check_safetensors(choice: AdapterRecord) -> dict[str, Any]:
    try:
        return check_adapter_dir(Path(choice.path), f"adapter {choice.label}")
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
        max_batch: int = DEFAULT_MAX_BATCH,
        gather_seconds: float = 0.005,
        merge_lone_adapter: bool = True,
        unmerge_after_idle: float = 0.5,
        prefix_cache_mb: int = DEFAULT_PREFIX_CACHE_MB,
        dtype: str = "auto",
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
        if max_batch < 1:
            raise ChatError("max_batch must be at least 1")
        self.load_in_4bit = load_in_4bit
        if dtype not in DTYPES:
            raise ChatError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        self.dtype_choice = dtype
        self.dtype: Any = None  # the torch dtype, resolved when the base loads
        # Fold a plain-LoRA adapter into the base weights while it serves every running row
        # (serving/merging.py); never on a quantized or masked-diffusion base.
        self.merge_lone_adapter = merge_lone_adapter and not load_in_4bit
        if prefix_cache_mb < 0:
            raise ChatError("prefix_cache_mb must be 0 (off) or more")
        # Keys and values of finished rows, reused by prompts that start the same way
        # (serving/prefix_cache.py): a chat's earlier turns, a shared system prompt.
        self.prefix_cache_mb = prefix_cache_mb
        self.prefixes: PrefixCache | None = None  # made with the base
        self.max_adapters = max_adapters
        self.max_batch = max_batch
        self.base_loads = 0
        self.adapter_loads = 0
        self.tokens_decoded = 0  # new tokens handed to callers, over all requests
        self.model: Any = None
        self.tokenizer: Any = None
        # adapter label -> PEFT adapter name, least recently used first
        self._peft_names: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()
        self._unmixable_logged: set[str] = set()
        self._decoding: Any = None  # the running DecodeBatch, made when the base loads
        self._in_use: set[str] = set()  # adapters of running rows: never evicted
        self._mode: str | None = _UNKNOWN  # what the model decodes through now (see _use)
        self._rows = RowAdapters()  # each row's adapter, for plain LoRA (see _route)
        self._plain: set[str] = set()  # PEFT names of attached plain-LoRA adapters
        self._unroutable: set[str] = set()  # attached adapters outside LoRA Linear layers
        self._merged: LoneAdapterMerge | None = None  # made with the base when merging is on
        # A masked-diffusion sampler takes one prompt at a time.
        self._scheduler = BatchScheduler(self._step,
                                         max_rows=1 if self.is_diffusion else max_batch,
                                         max_adapters=max_adapters,
                                         gather_seconds=gather_seconds,
                                         joinable=lambda: self._decoding.joinable,
                                         on_idle=self._when_idle,
                                         idle_seconds=unmerge_after_idle)

    def load(self) -> None:
        """Load the base model now rather than on the first request (no-op once loaded)."""
        if self.model is not None:
            # Without the lock: a request calls this on its way into the queue, and the decode
            # thread holds the lock for a whole step (a prefill of several prompts: a few
            # hundred ms), so requests arriving during a step were queued only after it and
            # admitted a step later still.
            return
        with self._lock:
            run_on_passing_thread(self._ensure_base)

    def activate(self, adapter_label: str) -> None:
        """Attach (if needed) and select an adapter, or the base alone, as the next decode step
        would: a warm-up, and what benchmarks time before calling ``self.model`` directly."""
        choice, _, _ = self._prepare(adapter_label, [{"role": "user", "content": ""}])

        def attach() -> None:
            self._ensure_base()
            self._route(self._attach([choice]))

        with self._lock:
            run_on_passing_thread(attach)

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
    def largest_batch(self) -> int:
        """The most rows decoded together so far."""
        return self._scheduler.largest_batch

    @property
    def running_rows(self) -> int:
        """Requests being decoded right now."""
        return 0 if self._decoding is None else len(self._decoding.rows)

    @property
    def merges(self) -> int:
        """Times an adapter was folded into the base weights for a batch of its own."""
        return 0 if self._merged is None else self._merged.merges

    @property
    def merged_adapter(self) -> str | None:
        """The label of the adapter folded into the base weights now, if any."""
        name = None if self._merged is None else self._merged.name
        return next((label for label, n in self._peft_names.items() if n == name), None)

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
        request = self._submit(adapter_label, messages, max_new_tokens, temperature, top_p)
        while request.chunks.get() is not None:
            pass
        return self._outcome(request)

    def stream(
        self,
        adapter_label: str | None,
        messages: list[dict[str, Any]],
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        top_p: float = 1.0,
    ) -> ReplyStream:
        """The reply as it grows: each item is the whole text so far.

        The request is queued at once and decoded in a batch with whatever else is waiting
        (see serving/batching.py); the first item comes one token after its batch starts.
        ``cancel()`` (from any thread) or closing the iterator early drops the request: its
        row stops at the next step.
        """
        request = self._submit(adapter_label, messages, max_new_tokens, temperature, top_p)
        return ReplyStream(request, self._texts(request))

    def _texts(self, request: ChatRequest) -> Iterator[str]:
        ids: list[int] = []
        shown = ""
        try:
            while (chunk := request.chunks.get()) is not None:
                ids += chunk
                # Decode the whole reply each time: BPE merges and multi-byte characters make
                # per-token pieces unreliable, and replies are short enough for this to be cheap.
                text = self.tokenizer.decode(ids, skip_special_tokens=True).strip()
                if text and text != shown:
                    shown = text
                    yield text
            final = self._outcome(request)
            if final and final != shown:
                yield final
        finally:
            request.cancelled.set()  # a no-op once finished; frees the row if the caller left

    def _submit(self, adapter_label: str | None, messages: list[dict[str, Any]],
                max_new_tokens: int, temperature: float, top_p: float) -> ChatRequest:
        choice, chat, mixable = self._prepare(adapter_label, messages)
        if max_new_tokens < 1:
            raise ChatError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        self.load()  # the tokenizer decodes streamed tokens in the caller's thread
        request = ChatRequest(None if choice is None else choice.label, chat, max_new_tokens,
                              temperature, top_p, mixable=mixable, adapter=choice)
        self._scheduler.submit(request)
        return request

    @staticmethod
    def _outcome(request: ChatRequest) -> str:
        if request.error is not None:
            raise request.error
        return request.text or ""

    def _step(self, running: list[ChatRequest], joiners: list[ChatRequest]
              ) -> list[ChatRequest]:
        """The scheduler's step (its thread only): admit the joiners, or decode one token for
        every running row; finish the rows that ended and return those still running."""
        with self._lock:
            try:
                return self._advance(joiners)
            except BaseException:
                # The scheduler fails every row it gave us; the next requests start afresh.
                if self._decoding is not None:
                    self._decoding.keep([])
                self._in_use = set()
                raise

    def _advance(self, joiners: list[ChatRequest]) -> list[ChatRequest]:
        self._ensure_base()
        fresh = []
        for request in joiners:
            try:
                request.prompt_ids = self._prompt_ids(request.chat, request.max_new_tokens)
                fresh.append(request)
            except ChatError as exc:
                request.finish(error=exc)
        if self.is_diffusion:
            for request in fresh:  # one at a time: the scheduler admits one row
                request.finish(self._run_diffusion(request))
            return []
        batch = self._decoding
        if fresh:
            names = self._attach([r.adapter for r in fresh])
            tokens = batch.admit(fresh, names, [r.prompt_ids for r in fresh],
                                 [r.sampling for r in fresh])
            ended = self._hand_out(fresh, tokens)
            ended = [i + len(batch.rows) - len(fresh) for i in ended]
        elif batch.rows:
            self._merge_if_alone(batch)
            ended = self._hand_out(batch.rows, batch.step())
        else:
            return []
        gone = set(ended)
        for i in ended:
            request = batch.rows[i]
            if self.prefixes is not None and not request.cancelled.is_set():
                # everything the row fed the model: its prompt and its reply but the last token
                self.prefixes.store(batch.names[i], request.prompt_ids + request.ids[:-1],
                                    batch.fed(i))
            self.tokens_decoded += len(request.ids)
            request.finish(self.tokenizer.decode(request.ids,
                                                 skip_special_tokens=True).strip())
        batch.keep([i for i in range(len(batch.rows)) if i not in gone])
        self._in_use = {r.label for r in batch.rows if r.label is not None}
        return list(batch.rows)

    def _hand_out(self, rows: list[ChatRequest], tokens: Any) -> list[int]:
        """Give each row its new token; the indices of rows that ended (end-of-sequence, token
        budget, or a caller that left, whose token is dropped)."""
        ended = []
        for i, (row, token) in enumerate(zip(rows, tokens.tolist(), strict=True)):
            if row.cancelled.is_set():
                ended.append(i)
                continue
            row.ids.append(token)
            row.chunks.put([token])
            if token == self.tokenizer.eos_token_id or len(row.ids) >= row.max_new_tokens:
                ended.append(i)
        return ended

    def _prepare(
        self, adapter_label: str | None, messages: list[dict[str, Any]]
    ) -> tuple[AdapterRecord | None, list[dict[str, str]], bool]:
        """The adapter, the conversation as plain text, and whether the request may share a
        batch with other adapters (plain LoRA or the base, on an autoregressive base)."""
        choice = None if adapter_label in (None, "", BASE_ONLY) else self._find(adapter_label)
        mixable = not self.is_diffusion
        if choice is not None:
            reason = not_plain_lora(_check_safetensors(choice))
            if reason and mixable and choice.label not in self._unmixable_logged:
                self._unmixable_logged.add(choice.label)
                logger.info("adapter %s is %s, which PEFT cannot mix per row: its requests are "
                            "batched only with each other", choice.label, reason)
            mixable = mixable and reason is None
        chat = [{"role": m["role"], "content": _text_of(m.get("content"))} for m in messages]
        if not chat:
            raise ChatError("nothing to answer: the conversation is empty")
        return choice, chat, mixable

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
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from core.small_batch_linear import speed_up_small_batches
        from serving.decoding import DecodeBatch
        from trainers.generate import pad_id

        dtype = resolve_dtype(self.dtype_choice, self.device)
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
        speed_up_small_batches(model)  # batched decode steps on CPU; a no-op on a GPU
        model.eval()
        self.model, self.tokenizer, self.dtype = model, tokenizer, dtype
        if self.merge_lone_adapter and not self.is_diffusion:
            from serving.merging import BaseWeights

            self._merged = LoneAdapterMerge(BaseWeights(model, self.base_path))
        self.prefixes = PrefixCache(self.prefix_cache_mb << 20) if self.prefix_cache_mb else None
        self._decoding = DecodeBatch(model, pad_id(tokenizer), self.device, self._route,
                                     self.prefixes)
        self.base_loads += 1

    def _attach(self, choices: list[AdapterRecord | None]) -> list[str]:
        """PEFT adapter names for a batch's rows ("__base__" for none), loading adapters not yet
        attached. Only adapters no running row uses are evicted, so no row loses its own."""
        from peft import PeftModel

        wanted = {c.label: c for c in choices if c is not None}
        for label, choice in wanted.items():
            if label not in self._peft_names:
                # PEFT adapter names become module keys, which may not contain dots.
                name = f"a{choice.id}_" + re.sub(r"\W", "_", label)
                if isinstance(self.model, PeftModel):
                    self.model.load_adapter(choice.path, adapter_name=name)
                else:
                    self.model = PeftModel.from_pretrained(self.model, choice.path,
                                                           adapter_name=name)
                    self._decoding.model = self.model
                self.model.eval()
                self._rows.forget()
                self._mode = _UNKNOWN  # new LoRA layers start enabled, whatever the others
                self._peft_names[label] = name
                if not self.is_diffusion:
                    install(self.model, self._rows)  # every LoRA layer, so base rows skip all
                    if not in_linear_layers_only(self.model, name):
                        self._unroutable.add(name)
                    elif not_plain_lora(_check_safetensors(choice)) is None:
                        self._plain.add(name)
                self.adapter_loads += 1
            self._peft_names.move_to_end(label)
        for label in [k for k in self._peft_names if k not in wanted and k not in self._in_use]:
            if len(self._peft_names) <= self.max_adapters:
                break
            name = self._peft_names.pop(label)
            if self._merged is not None and self._merged.name == name:
                self._restore()
            if self.prefixes is not None:
                self.prefixes.forget(name)
            self.model.delete_adapter(name)
            self._rows.forget()
            self._plain.discard(name)
            self._unroutable.discard(name)
            self._mode = _UNKNOWN
        return [self._peft_names[c.label] if c is not None else BASE for c in choices]

    def _route(self, names: list[str]) -> dict[str, Any]:
        """Ready the next forward for rows on these PEFT adapter names; its extra arguments.

        Rows on plain LoRA adapters and the base go through ``RowAdapters`` (set once per
        step, no module walk). A batch with a LoRA variant (DoRA: one adapter per batch) goes
        through PEFT's own switching, and so does every batch while an attached adapter has
        layers ``RowAdapters`` does not route (a LoRA embedding, ``modules_to_save``)."""
        merged = None if self._merged is None else self._merged.name
        if merged is not None and any(n != merged for n in names):
            self._restore()
            merged = None
        if (not self.is_diffusion and not self._unroutable
                and all(n == BASE or n in self._plain for n in names)):
            # Rows on the merged adapter decode through the base weights, which hold it.
            self._rows.set([BASE] * len(names) if merged else names, self.device)
            return {}
        self._restore()
        self._rows.clear()
        mixed = len(set(names)) > 1
        self._use(None if mixed else names[0])
        return {"adapter_names": names} if mixed else {}

    def _merge_if_alone(self, batch: Any) -> None:
        """Fold the batch's adapter into the base weights when it alone serves every row, it
        is plain LoRA, and some row may still decode long enough to repay the merge."""
        if self._merged is None or self._merged.name is not None or self._unroutable:
            return
        names = set(batch.names)
        if len(names) != 1:
            return
        (name,) = names
        if name == BASE or name not in self._plain:
            return
        if max(r.max_new_tokens - len(r.ids) for r in batch.rows) >= MERGE_MIN_TOKENS:
            self._merged.merge(self.model, name)

    def _when_idle(self) -> None:
        """With nothing to decode for a while, put the base's weights back now, so that the
        next request, on whatever adapter, does not wait for it (a merge is undone in about
        the time of a decode step; requests in quick succession keep it)."""
        with self._lock:
            self._restore()

    def _restore(self) -> None:
        """Unfold a merged adapter: the base's own weights, bit for bit. If they cannot be read
        back, drop the model so that the next request reloads it cleanly."""
        if self._merged is None:
            return
        try:
            self._merged.restore()
        except MergeError as exc:
            self.model = None
            self._decoding = None
            self._merged = None
            self.prefixes = None
            self._peft_names.clear()
            self._plain.clear()
            self._unroutable.clear()
            self._rows.forget()
            self._mode = _UNKNOWN
            raise ChatError(str(exc)) from exc

    def _use(self, name: str | None) -> None:
        """Make the next forward decode through one adapter, the base alone ("__base__"), or
        each row's own (None: PEFT's adapter_names). Only a change from the last step touches
        the model: switching walks every module, a third of a tiny model's decode step."""
        from peft import PeftModel

        if not isinstance(self.model, PeftModel) or name == self._mode:
            return
        if name == "__base__":
            self.model.base_model.disable_adapter_layers()
        else:
            self.model.base_model.enable_adapter_layers()
            if name is not None:
                self.model.set_adapter(name)
        self._mode = name

    def _run_diffusion(self, request: ChatRequest) -> str:
        import torch

        from trainers.diffusion.loading import answer_ids
        from trainers.diffusion.sampler import SamplerConfig

        self._route(self._attach([request.adapter]))
        sampler = SamplerConfig.for_length(request.max_new_tokens, self.diffusion_block_length,
                                           temperature=request.temperature)

        def on_prefix(ids: list[int]) -> None:
            if len(ids) > len(request.ids):
                request.chunks.put(ids[len(request.ids):])
                request.ids = list(ids)

        prompt = torch.tensor([request.prompt_ids], device=self.device)
        return answer_ids(self.model, self.tokenizer, prompt, sampler, on_prefix=on_prefix)

    def _prompt_ids(self, chat: list[dict[str, str]], max_new_tokens: int) -> list[int]:
        """Prompt token ids, dropping the oldest turns until prompt and reply fit the context."""
        limit = getattr(self.model.config, "max_position_embeddings", None) or 1_000_000
        while True:
            ids = self.tokenizer.apply_chat_template(
                chat, add_generation_prompt=True, return_tensors="pt", return_dict=True
            )["input_ids"]
            if ids.shape[1] + max_new_tokens <= limit:
                return ids[0].tolist()
            droppable = [i for i, m in enumerate(chat[:-1]) if m["role"] != "system"]
            if not droppable:
                raise ChatError(
                    f"the message is too long for {self.base_name!r} ({ids.shape[1]} tokens "
                    f"plus {max_new_tokens} new ones > {limit}); shorten it or lower max tokens"
                )
            chat = chat[: droppable[0]] + chat[droppable[0] + 1 :]
