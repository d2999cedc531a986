"""Chat engine latency: hot-swapping adapters vs reloading, time to first token, decode speed.

    python benchmarks/ui_latency.py                       # a tiny random Llama, built here
    python benchmarks/ui_latency.py --hidden 1024 --layers 8
    python benchmarks/ui_latency.py --base NAME           # a registered base and its adapters

In one run: the median time to switch between two attached adapters (PEFT ``set_adapter``
through ``ChatEngine.activate``) against loading the base and the adapter from disk, and
their ratio (targets: at most 50 ms, at least 20x faster); the median time to first token
of a streamed reply; decode tokens/s of the engine's streamed replies with an adapter relative
to the base alone (target: at least 0.9), with the adapter folded into the base weights while
it serves alone (the default) and with ``--no-merge``; and what switching away from a merged
adapter costs; and the time to first token of a chat's fourth turn with the earlier turns'
keys and values reused (the default) and computed again.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from core.device import DTYPES  # noqa: E402  (after the path is set; no torch at import)

QUESTION = [{"role": "user", "content": "What is a low-rank adapter?"}]
# One per round where first tokens are timed: a question asked before would find its keys and
# values in the prefix cache and time nothing but one token.
QUESTIONS = ["What is a low-rank adapter?", "What is glaucoma?", "How do vaccines work?",
             "What causes high blood pressure?", "Why do we sleep?", "What is insulin for?",
             "How does the heart pump blood?", "What is a migraine?", "What is asthma?",
             "How are broken bones healed?", "What does the liver do?", "What is anemia?",
             "How do antibiotics work?", "What is a stroke?", "Why is exercise healthy?",
             "What is dementia?", "How is diabetes treated?", "What causes allergies?",
             "What is arthritis?", "How do lungs take in oxygen?"]


def build_tiny_store(root: Path, hidden: int, layers: int, adapters: int = 2) -> str:
    """A throwaway store with a random Llama and random LoRA adapters (``bench-a``,
    ``bench-b``, ...); returns the base's name."""
    os.environ["LORAFORGE_HOME"] = str(root / "home")
    os.environ.pop("LORAFORGE_DATABASE_URL", None)
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from registry import db
    from registry.db import session_scope
    from registry.models import Adapter, BaseModel
    from tests.ui.conftest import _build_tokenizer

    db.upgrade()
    base_dir = root / "base"
    tokenizer = _build_tokenizer(base_dir)
    config = LlamaConfig(
        vocab_size=-(-len(tokenizer) // 32) * 32, hidden_size=hidden,
        intermediate_size=hidden * 2, num_hidden_layers=layers,
        num_attention_heads=max(2, hidden // 64), num_key_value_heads=max(2, hidden // 64),
        max_position_embeddings=1024, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(base_dir, safe_serialization=True)
    lora = LoraConfig(r=16, lora_alpha=32, init_lora_weights=False, task_type="CAUSAL_LM",
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    with session_scope() as session:
        base = BaseModel(name="bench-base", source="benchmark", path=str(base_dir))
        session.add(base)
        session.flush()
        names = [f"bench-{chr(ord('a') + i)}" for i in range(adapters)]
        for seed, name in enumerate(names, start=1):
            torch.manual_seed(seed)
            model = get_peft_model(LlamaForCausalLM.from_pretrained(base_dir), lora)
            model.save_pretrained(root / name, safe_serialization=True)
            session.add(Adapter(name=name, version=1, path=str(root / name), method="lora",
                                base_model_id=base.id))
    return "bench-base"


def median_ms(samples: list[float]) -> float:
    return 1000 * statistics.median(samples)


def time_switches(engine, labels: list[str], rounds: int) -> float:
    for label in labels:  # attach both first: we time the swap, not the first load
        engine.activate(label)
    samples = []
    for i in range(rounds):
        start = time.perf_counter()
        engine.activate(labels[i % 2])
        samples.append(time.perf_counter() - start)
    return median_ms(samples)


def time_reloads(engine, label: str, rounds: int) -> float:
    """Load base + adapter from disk as a server without hot swap would on every switch."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from registry.adapters import get_adapter

    path = get_adapter(label).path
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        model = AutoModelForCausalLM.from_pretrained(engine.base_path, dtype=engine.dtype,
                                                     use_safetensors=True).to(engine.device)
        PeftModel.from_pretrained(model, path).eval()
        if engine.device == "cuda":
            torch.cuda.synchronize()
        samples.append(time.perf_counter() - start)
        del model
    return median_ms(samples)


def time_first_token(engine, label: str, rounds: int) -> float:
    """Median ms to the first streamed text of a new question (a shared system prompt that
    the chat template adds is reused from the prefix cache, as on any warm server)."""
    samples = []
    for i in range(rounds):
        start = time.perf_counter()
        question = [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}]
        stream = engine.stream(label, question, max_new_tokens=32)
        next(stream)
        samples.append(time.perf_counter() - start)
        for _ in stream:  # finish it, so the lock is free for the next round
            pass
    return median_ms(samples)


def decode_tokens_per_second(engine, label: str | None, tokens: int, rounds: int) -> float:
    """Greedy decode speed of the engine's own streamed replies of up to ``tokens`` new tokens:
    tokens after the first over the time after the first (the prefill is the time to first
    token, above), best of ``rounds``. A merge of the adapter (once, in the first round) is
    inside the timed span."""
    from serving.engine import BASE_ONLY

    best = 0.0
    for _ in range(rounds):
        before = engine.tokens_decoded
        stream = engine.stream(label or BASE_ONLY, QUESTION, max_new_tokens=tokens)
        next(stream)
        first = time.perf_counter()
        for _ in stream:
            pass
        decoded = engine.tokens_decoded - before
        if decoded < 2:
            sys.exit(f"{label or BASE_ONLY} stopped after {decoded} token(s); ask another "
                     "question or use a base that answers at length")
        best = max(best, (decoded - 1) / (time.perf_counter() - first))
    return best


CHAT = ["What is glaucoma?", "Who is at risk for it?", "How is it diagnosed?",
        "What are the treatments, and do they restore lost vision?"]


def follow_up_first_token(engine, label: str, tokens: int) -> tuple[float, int]:
    """A conversation of ``CHAT``'s questions, each asked with the earlier turns before it:
    (the last turn's time to first token in ms, its prompt's length in tokens)."""
    chat: list[dict[str, str]] = []
    for question in CHAT[:-1]:
        chat.append({"role": "user", "content": question})
        chat.append({"role": "assistant",
                     "content": engine.generate(label, chat, max_new_tokens=tokens)})
    chat.append({"role": "user", "content": CHAT[-1]})
    start = time.perf_counter()
    stream = engine.stream(label, chat, max_new_tokens=tokens)
    next(stream)
    first = time.perf_counter() - start
    for _ in stream:
        pass
    return 1000 * first, len(engine._prompt_ids(chat, tokens))


def time_restores(engine, labels: list[str], tokens: int, rounds: int) -> float:
    """Switching away from an adapter folded into the base weights: the base's weights are read
    back before the next adapter is selected (median ms); 0 when the engine never merged."""
    samples = []
    for i in range(rounds):
        merges = engine.merges
        engine.generate(labels[i % 2], QUESTION, max_new_tokens=tokens)
        if engine.merges == merges:
            continue
        start = time.perf_counter()
        engine.activate(labels[(i + 1) % 2])
        samples.append(time.perf_counter() - start)
    return median_ms(samples) if samples else 0.0


def let_idle_engines_go() -> None:
    """Wait for the decode threads of engines no longer used to end (each does after a few
    idle seconds): while one lives, its OpenMP thread pool slows the next engine's decoding by
    half on 2 cores (``serving.batching.BatchScheduler`` says why). A process serves with one
    engine; this times each engine as if it were alone."""
    import threading

    from serving.batching import DECODE_THREAD

    for thread in threading.enumerate():
        if thread.name == DECODE_THREAD:
            thread.join(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", help="registered base to use (default: build a tiny one)")
    parser.add_argument("--hidden", type=int, default=256, help="tiny base hidden size")
    parser.add_argument("--layers", type=int, default=4, help="tiny base layers")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: auto)")
    parser.add_argument("--rounds", type=int, default=20, help="repetitions per measure")
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per decode run")
    parser.add_argument("--dtype", default="auto", choices=DTYPES,
                        help="the engines' --dtype (auto: float32 on a CPU); the other dtype's "
                        "decode is timed as well")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="loraforge-ui-bench-") as tmp:
        base = args.base or build_tiny_store(Path(tmp), args.hidden, args.layers)
        from serving.engine import ChatEngine

        engine = ChatEngine(base=base, device=args.device, dtype=args.dtype)
        unmerged = ChatEngine(base=base, device=args.device, merge_lone_adapter=False,
                              dtype=args.dtype)
        labels = engine.list_choices()[1:3]
        if len(labels) < 2:
            sys.exit(f"base {base!r} needs two adapters to switch between; it has {len(labels)}")
        engine.load()
        switch = time_switches(engine, labels, args.rounds * 5)
        reload = time_reloads(engine, labels[0], max(3, args.rounds // 4))
        ttft = time_first_token(engine, labels[0], args.rounds)
        base_only = decode_tokens_per_second(engine, None, args.tokens, 3)
        with_adapter = decode_tokens_per_second(engine, labels[0], args.tokens, 3)
        restore = time_restores(engine, labels, args.tokens, 4)
        unmerged.load()
        let_idle_engines_go()
        plain = decode_tokens_per_second(unmerged, labels[0], args.tokens, 3)
        del unmerged
        let_idle_engines_go()
        follow_up, prompt_tokens = follow_up_first_token(engine, labels[1], args.tokens)
        uncached = ChatEngine(base=base, device=args.device, prefix_cache_mb=0,
                              dtype=args.dtype)
        uncached.load()
        let_idle_engines_go()
        follow_up_full, _ = follow_up_first_token(uncached, labels[1], args.tokens)
        del uncached
        # The other dtype's decode, in the same run: what --dtype changes on this machine.
        other = "bfloat16" if str(engine.dtype) == "torch.float32" else "float32"
        full = ChatEngine(base=base, device=args.device, dtype=other)
        full.load()
        let_idle_engines_go()
        other_base = decode_tokens_per_second(full, None, args.tokens, 3)
        other_adapter = decode_tokens_per_second(full, labels[0], args.tokens, 3)
        del full
        dtype = str(engine.dtype).removeprefix("torch.")
        rows = [
            ("device, dtype", f"{engine.device}, {dtype}", ""),
            ("adapter switch, hot swap (median)", f"{switch:.2f} ms", "target <= 50 ms"),
            ("reload base + adapter (median)", f"{reload:.1f} ms", ""),
            ("reload / hot swap", f"{reload / switch:.0f}x", "target >= 20x"),
            ("time to first token (median)", f"{ttft:.1f} ms", ""),
            ("decode, base only", f"{base_only:.1f} tok/s", ""),
            ("decode, with adapter (merged while alone)", f"{with_adapter:.1f} tok/s", ""),
            ("adapter / base decode", f"{with_adapter / base_only:.2f}", "target >= 0.9"),
            ("decode, with adapter, --no-merge", f"{plain:.1f} tok/s", ""),
            ("adapter / base decode, --no-merge", f"{plain / base_only:.2f}", ""),
            ("switch right after a merged reply (median)", f"{restore:.1f} ms",
             "reads the base weights back first"),
            ("merges during the run", str(engine.merges), ""),
            (f"first token, turn {len(CHAT)} of a chat ({prompt_tokens} prompt tokens)",
             f"{follow_up:.1f} ms", "earlier turns' keys and values reused"),
            ("  the same, --prefix-cache-mb 0", f"{follow_up_full:.1f} ms",
             f"{follow_up_full / follow_up:.1f}x slower"),
            (f"decode, base only, --dtype {other}", f"{other_base:.1f} tok/s",
             f"{other_base / base_only:.2f}x {dtype}'s"),
            (f"decode, with adapter (merged), --dtype {other}", f"{other_adapter:.1f} tok/s",
             f"{other_adapter / with_adapter:.2f}x {dtype}'s"),
            ("base loads during the run", str(engine.base_loads), "must be 1"),
        ]
        width = max(len(r[0]) for r in rows)
        for name, value, note in rows:
            print(f"{name:<{width}}  {value:>14}  {note}")


if __name__ == "__main__":
    main()
