"""Serving under concurrency: N clients at once on the OpenAI-compatible API, each streaming.

    python benchmarks/serving.py                       # a tiny random Llama and 2 adapters
    python benchmarks/serving.py --base smollm2        # a registered base and its adapters
    python benchmarks/serving.py --clients 1 4 8 16 --tokens 32

Every client sends one streamed chat completion (greedy, a fixed prompt, ``--tokens`` new
tokens) to its own model id, cycling over the base and its adapters, all at once through the
official ``openai`` client. In one run it reports, per N: aggregate completion tokens/s, and
the p50 and p95 time to first token. This is the baseline of today's engine, which serves one
request at a time under one lock; issue 18's batching engine is to be measured against it
(goal at N = 8 on 2 CPU cores: 3x the aggregate tokens/s, p95 TTFT within 2x of N = 1).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

QUESTION = [{"role": "user", "content": "What is a low-rank adapter?"}]


def start_api(engine, port: int):
    import uvicorn

    from serving.openai_api import build_app

    server = uvicorn.Server(uvicorn.Config(build_app(engine), host="127.0.0.1", port=port,
                                           log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.02)
    return server


def one_client(url: str, model: str, tokens: int) -> tuple[float, float, str]:
    """(time to first token, total time, reply text) of one streamed request."""
    import openai

    client = openai.OpenAI(base_url=url, api_key="none")
    start, first, text = time.perf_counter(), None, ""
    for chunk in client.chat.completions.create(model=model, messages=QUESTION, stream=True,
                                                temperature=0, max_tokens=tokens):
        piece = chunk.choices[0].delta.content if chunk.choices else None
        if piece:
            first = first or time.perf_counter()
            text += piece
    end = time.perf_counter()
    return (first or end) - start, end - start, text


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", help="registered base to serve (default: build a tiny one)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--tokens", type=int, default=32, help="new tokens per request")
    parser.add_argument("--hidden", type=int, default=256, help="tiny base hidden size")
    parser.add_argument("--layers", type=int, default=4, help="tiny base layers")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="loraforge-serving-bench-") as tmp:
        if args.base is None:
            from benchmarks.ui_latency import build_tiny_store

            base = build_tiny_store(Path(tmp), args.hidden, args.layers)
        else:
            base = args.base
        from serving.engine import ChatEngine
        from tests.ui.conftest import free_port

        engine = ChatEngine(base=base)
        engine.load()
        models = [engine.base_name, *engine.list_choices()[1:]]
        port = free_port()
        server = start_api(engine, port)
        url = f"http://127.0.0.1:{port}/v1"
        one_client(url, models[-1], 4)  # warm-up: attach an adapter, first-call costs
        print(f"engine: serialized (one lock); base {engine.base_name} on {engine.device}; "
              f"models cycled: {', '.join(models)}; {args.tokens} new tokens per request")
        print("| clients | aggregate tokens/s | p50 TTFT (s) | p95 TTFT (s) | wall (s) |")
        print("|---|---|---|---|---|")
        for n in args.clients:
            start = time.perf_counter()
            with ThreadPoolExecutor(max_workers=n) as pool:
                results = list(pool.map(lambda i: one_client(url, models[i % len(models)],
                                                             args.tokens), range(n)))
            wall = time.perf_counter() - start
            ttft = [r[0] for r in results]
            # Replies re-tokenized: close to the tokens generated (a reply may stop early).
            total_tokens = sum(len(engine.tokenizer(r[2], add_special_tokens=False)["input_ids"])
                               for r in results)
            print(f"| {n} | {total_tokens / wall:.1f} | {statistics.median(ttft):.2f} | "
                  f"{p95(ttft):.2f} | {wall:.1f} |")
        server.should_exit = True


if __name__ == "__main__":
    main()
