"""The batching engine's first-token floor: N requests handed to it at one instant.

    LORAFORGE_HOME=... python benchmarks/serving_floor.py --base smollm2 --clients 1 8 --rounds 2

No HTTP and no arrival spread: N threads wait on one barrier, then each streams a new question
(a different one every time, so no stored prefix covers it) on the engine's choices in turn
(every adapter of the base, and the base alone). All N are prefilled in one batch, the best any
scheduler can do, so the slowest first token of N against one request's is the lowest ratio
that ``benchmarks/serving.py`` can show on this machine. Prints, per N and round, the slowest
and the median time to first token and the largest batch the engine ran.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.ui_latency import QUESTIONS  # noqa: E402  (after the path is set)
from core.device import DTYPES  # noqa: E402


def burst(engine, models: list[str], clients: int, tokens: int, cases: itertools.count
          ) -> list[float]:
    """Each client's time to first token when all start at one instant."""
    firsts = [0.0] * clients
    barrier = threading.Barrier(clients)

    def ask(i: int, question: str) -> None:
        barrier.wait()
        start = time.perf_counter()
        stream = engine.stream(models[i % len(models)], [{"role": "user", "content": question}],
                               max_new_tokens=tokens)
        next(iter(stream))
        firsts[i] = time.perf_counter() - start
        for _ in stream:
            pass

    threads = []
    for i in range(clients):
        case = next(cases)
        question = f"{QUESTIONS[case % len(QUESTIONS)]} (case {case})"
        threads.append(threading.Thread(target=ask, args=(i, question)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return firsts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="registered base to serve, e.g. smollm2")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=2, help="bursts per client count")
    parser.add_argument("--tokens", type=int, default=8, help="new tokens per request")
    parser.add_argument("--dtype", default="auto", choices=DTYPES)
    args = parser.parse_args()

    from serving.engine import ChatEngine

    engine = ChatEngine(base=args.base, dtype=args.dtype)
    engine.load()
    models = engine.list_choices()
    cases = itertools.count()
    burst(engine, models, len(models), 4, cases)  # attach every adapter once
    print(f"{args.base} ({engine.device}, {str(engine.dtype).removeprefix('torch.')}), "
          f"choices: {', '.join(models)}")
    single = []
    for clients in args.clients:
        for r in range(args.rounds):
            firsts = burst(engine, models, clients, args.tokens, cases)
            if clients == 1:
                single.append(firsts[0])
            ratio = f"  {max(firsts) / statistics.median(single):.1f}x one request" \
                if single and clients > 1 else ""
            print(f"N={clients} round {r + 1}: slowest first token {max(firsts):.3f} s, median "
                  f"{statistics.median(firsts):.3f} s, largest batch {engine.largest_batch}"
                  f"{ratio}")


if __name__ == "__main__":
    main()
