"""Batched greedy decoding with ``F.linear`` against ``core.small_batch_linear``, in one run.

    python benchmarks/small_batch_linear.py --model smollm2        # a registered base
    python benchmarks/small_batch_linear.py --model PATH --batch 1 4 8 16 --tokens 32

For each batch size, transformers' ``generate`` decodes ``--tokens`` new tokens (EOS ignored)
for that many different prompts, once with every ``nn.Linear`` on ``F.linear`` and once on the
small-batch path, alternating, best of ``--rounds``. It reports decode steps/s, tokens/s, the
speed-up, and whether both paths chose the same tokens. A second table times each of the
model's distinct linear shapes alone for 1 to 16 rows. There a layer's weights stay in the CPU's
cache from one call to the next, so small layers show the path's per-call overhead (a few tens
of microseconds), not the reads from memory that a whole model's decode step waits on; the
first table is the one that says which path is faster.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

PROMPTS = ["What are the symptoms of glaucoma?", "What is diabetes?",
           "Who is at risk for high blood pressure?", "How can the flu be prevented?",
           "What causes asthma in children?", "How is anemia diagnosed?",
           "What are the treatments for migraine?", "Is psoriasis contagious?"]


def set_path(linears: list, fast: bool) -> None:
    from core.small_batch_linear import speed_up_small_batches

    for layer in linears:
        if fast:
            speed_up_small_batches(layer)
        else:
            layer.__dict__.pop("forward", None)  # back to nn.Linear.forward (F.linear)


def decode(model, tokenizer, batch: int, tokens: int, rounds: int):
    """(best steps/s, the generated ids) for ``batch`` prompts."""
    import torch

    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(batch)]
    inputs = tokenizer(prompts, return_tensors="pt", padding=True)
    best, out = 0.0, None
    with torch.inference_mode():
        model.generate(**inputs, max_new_tokens=2, do_sample=False)  # warm
        for _ in range(rounds):
            start = time.perf_counter()
            out = model.generate(**inputs, max_new_tokens=tokens, min_new_tokens=tokens,
                                 do_sample=False, pad_token_id=tokenizer.pad_token_id)
            best = max(best, tokens / (time.perf_counter() - start))
    return best, out


def time_shapes(model, rows: list[int]) -> None:
    import torch

    from core.small_batch_linear import speed_up_small_batches

    shapes = sorted({tuple(m.weight.shape) for m in model.modules()
                     if type(m) is torch.nn.Linear}, reverse=True)
    print("\n| layer (out x in) | rows | F.linear (ms) | small-batch (ms) | speed-up |")
    print("|---|---|---|---|---|")
    for out_features, in_features in shapes:
        layer = torch.nn.Linear(in_features, out_features, bias=False)
        fast = torch.nn.Linear(in_features, out_features, bias=False)
        fast.weight = layer.weight
        speed_up_small_batches(fast)
        repeat = max(5, int(4e8 // layer.weight.numel()) // 40)
        for n in rows:
            x = torch.randn(n, in_features)
            times = []
            for module in (layer, fast):
                module(x)
                start = time.perf_counter()
                for _ in range(repeat):
                    module(x)
                times.append((time.perf_counter() - start) / repeat * 1000)
            print(f"| {out_features} x {in_features} | {n} | {times[0]:.3f} | {times[1]:.3f} | "
                  f"{times[0] / times[1]:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True,
                        help="a model directory, or the name of a registered base")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--tokens", type=int, default=32, help="new tokens per row")
    parser.add_argument("--rounds", type=int, default=2, help="best of this many per path")
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from benchmarks.model_arg import resolve_model

    path = resolve_model(args.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32,
                                                 use_safetensors=True).eval()
    linears = [m for m in model.modules() if type(m) is torch.nn.Linear]
    print(f"{path.name}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, "
          f"{len(linears)} linear layers, {torch.get_num_threads()} threads, "
          f"{args.tokens} new tokens per row")
    print("| rows | F.linear steps/s | small-batch steps/s | tokens/s (small-batch) | speed-up "
          "| same tokens |")
    print("|---|---|---|---|---|---|")
    for batch in args.batch:
        runs = {}
        for fast in (False, True):
            set_path(linears, fast)
            runs[fast] = decode(model, tokenizer, batch, args.tokens, args.rounds)
        same = torch.equal(runs[False][1], runs[True][1])
        print(f"| {batch} | {runs[False][0]:.2f} | {runs[True][0]:.2f} | "
              f"{runs[True][0] * batch:.1f} | {runs[True][0] / runs[False][0]:.2f}x | "
              f"{'yes' if same else 'NO'} |", flush=True)
    set_path(linears, False)
    time_shapes(model, [1, 4, 8, 16])


if __name__ == "__main__":
    main()
