"""The study's table, measured: LoRA, QLoRA and a full fine-tune of a LLaMA-2-7B-shaped model.

    python benchmarks/paper_table.py                          # a GPU: the real 32-layer shape
    python benchmarks/paper_table.py --device cpu --layers 1,2 --grad-accum 1 --steps 2
    python benchmarks/paper_table.py --model "$LORAFORGE_HOME/bases/smollm2"   # a real model

The model is LLaMA-2-7B's architecture built from a hand-written config with random weights:
memory and speed don't depend on the weight values, and nothing is downloaded. Three kinds of
figure, labelled as such in the table:

* trainable parameters: exact, counted on the full 32-layer shape on the meta device (no memory);
* peak memory and samples/s: measured over real training steps (forward, backward, AdamW step;
  random token ids) at each ``--layers`` depth, each method in its own process, loaded and
  wrapped by the same backend hooks ``loraforge train --method ...`` uses, with the loss computed
  as its trainer (TRL's ``SFTTrainer``) computes it: through TRL's fused LM head, in tiles, never
  holding the whole ``(tokens, vocabulary)`` logits (``--full-logits``: the plain
  ``model(labels=...)`` loss, which does);
* the 32-layer figures, when 32 layers were not measured: a straight line fitted through the
  measured depths (memory and seconds per sample both grow linearly with depth), extrapolated.

Peak memory on CUDA is ``torch.cuda.max_memory_allocated`` over the training steps. On CPU it is
the process's peak resident set size over the training steps (reset with Linux's
``/proc/self/clear_refs`` once the model is loaded, the CPU counterpart of
``torch.cuda.reset_peak_memory_stats``) minus the resident size after imports, before loading:
torch's CPU allocator keeps no statistics and tracemalloc does not see its allocations.

With ``--model`` (a model directory, or the name of a registered base with a local copy) the
same methods are measured on that model's own config and weights, at its full depth only: every
figure is measured or, for the parameter counts, exact; nothing is extrapolated.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.model_arg import resolve_model  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")

METHODS = ("lora", "qlora", "full")
FULL_LAYERS = 32  # LLaMA-2-7B's depth: the counts and the extrapolation are for this
ALL_PROJECTIONS = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
# The study's reported figures (LLaMA-2-7B, LoRA, MedQuAD-style health QA).
STUDY = {"trainable_params": 45.6e6, "lora_memory_gb": 4.74, "full_memory_gb": 23.1,
         "samples_per_second": 5.19}
GB = 1e9


def llama2_7b_config(layers: int = FULL_LAYERS, **shape):
    """LLaMA-2-7B's config.json written out by hand (no Hub access); ``shape`` overrides sizes."""
    from transformers import LlamaConfig

    sizes = {"hidden_size": 4096, "intermediate_size": 11008, "num_attention_heads": 32,
             "num_key_value_heads": 32, "vocab_size": 32000, "max_position_embeddings": 4096}
    sizes.update(shape)
    return LlamaConfig(num_hidden_layers=layers, rms_norm_eps=1e-5, tie_word_embeddings=False,
                       hidden_act="silu", bos_token_id=1, eos_token_id=2, **sizes)


def lora_trainable_formula(config, rank: int, targets: list[str]) -> int:
    """r * (in + out) for every targeted projection of every layer: LoRA's A and B matrices."""
    h, i = config.hidden_size, config.intermediate_size
    kv = config.num_key_value_heads * (h // config.num_attention_heads)
    shapes = {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h),
              "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}
    return config.num_hidden_layers * sum(rank * sum(shapes[t]) for t in targets)


def train_config(method: str, args: argparse.Namespace):
    """The backend's own config with this benchmark's adapter settings."""
    from trainers.discovery import get_backend

    backend = get_backend(method)
    fields = {"learning_rate": args.lr, "batch_size": args.batch_size,
              "max_length": args.seq_len, "gradient_checkpointing": args.gradient_checkpointing,
              "low_memory": args.low_memory}
    if method != "full":
        fields.update(rank=args.rank, alpha=args.alpha, dropout=args.dropout,
                      target_modules=args.target_modules.split(","))
    return backend, backend.config_class(**fields)


def count_on_meta(config, method: str, args: argparse.Namespace) -> tuple[int, int]:
    """(trainable, total) parameters of ``method`` on ``config``'s shape, with no memory used.

    QLoRA trains the same adapter as LoRA; its 4-bit base holds as many values as LoRA's.
    """
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    backend, cfg = train_config(method, args)
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config)
    # Built empty, tied embeddings stay two tensors (a tied model such as SmolLM2 would count
    # its vocab x hidden matrix twice), and tying inside init_empty_weights makes a new copy.
    model.tie_weights()  # a no-op for untied configs such as LLaMA-2's
    with init_empty_weights():
        peft_config = backend.peft_config(cfg)
        if peft_config is not None:
            from peft import get_peft_model

            model = get_peft_model(model, peft_config)
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


# -- measuring (each in its own process) ----------------------------------------------------------


def _proc_status_bytes(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}; CPU memory needs Linux")


def _reset_peak(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    else:
        with open("/proc/self/clear_refs", "w") as refs:  # "5": reset the peak RSS (Linux >= 4.0)
            refs.write("5")


def _memory(device: str, peak: bool) -> int:
    import torch

    if device.startswith("cuda"):
        return int(torch.cuda.max_memory_allocated() if peak else torch.cuda.memory_allocated())
    return _proc_status_bytes("VmHWM" if peak else "VmRSS")


def _own_memory(model) -> None:
    """Copy memory-mapped weights into the process's own memory (CPU's answer to ``.to(cuda)``).

    from_pretrained leaves CPU weights mapped from the safetensors file; whatever the loader
    touched of that file (all of it, when quantizing) then counts in the resident size for as
    long as one tensor still maps it, and QLoRA would be charged for its fp32 checkpoint.
    Then freed heap goes back to the OS, so the resident size is what the model holds.
    """
    import ctypes
    import gc

    import torch

    with torch.no_grad():
        for p in model.parameters():
            if type(p).__name__ != "Params4bit":  # quantized weights are already copies
                p.data = p.data.clone()
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the figure is an upper bound, no more
        pass


def build_base(config, model_dir: Path, device: str) -> None:
    """Random weights in the dtype training loads (bf16 on CUDA, fp32 on CPU), saved to disk."""
    import torch
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    torch.manual_seed(0)
    with torch.device(device):  # initialising 7B weights on a GPU takes seconds, not minutes
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.save_pretrained(model_dir)


def causal_lm_loss(model, ids, *, full_logits: bool):
    """The mean next-token loss, as ``SFTTrainer.compute_loss`` takes it (or, with
    ``full_logits``, from transformers' own loss over the whole logits)."""
    if full_logits:
        return model(input_ids=ids, labels=ids, use_cache=False).loss
    outputs = model(input_ids=ids, labels=ids, use_cache=False, fused_lm_head=True)
    return -outputs.log_probs.sum() / outputs.label_mask.sum().clamp(min=1)


def measure(method: str, model_dir: Path, device: str, args: argparse.Namespace) -> dict:
    """Load and wrap as ``loraforge train`` does, then time warmup + measured optimizer steps."""
    import torch

    backend, cfg = train_config(method, args)
    if method == "qlora":
        from trainers.backends.qlora import check_4bit_runs

        check_4bit_runs(device)
    on_gpu = device.startswith("cuda")
    if cfg.low_memory:  # as the trainer does first thing
        from trainers.backends.sft import lower_memory

        lower_memory(device)
    baseline = _memory(device, peak=False)  # after imports, before the model
    model = backend.load_model(str(model_dir), cfg, device)
    if not args.full_logits:
        from trl.trainer.utils import add_fused_lm_head

        # As SFTTrainer does, on the unwrapped model and with the outputs its metrics read
        add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
    model = backend.wrap_model(model, cfg, model_dir)
    if on_gpu and method != "qlora":  # QLoRA loads onto the GPU; the others load on CPU
        model.to(device)  # as the Trainer does before training
    elif not on_gpu:
        _own_memory(model)
    if cfg.gradient_checkpointing:  # --low-memory turns it on too
        model.gradient_checkpointing_enable()
    model.train()  # from_pretrained returns eval mode: no dropout, and QLoRA's CPU repack trap
    loaded = _memory(device, peak=False) - baseline
    trainable = [p for p in model.parameters() if p.requires_grad]
    # transformers' default optimizer ("adamw_torch_fused") with its default weight decay of 0.
    optimizer = torch.optim.AdamW(trainable, lr=args.lr, weight_decay=0.0, fused=True)
    generator = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size

    def step() -> None:
        for _ in range(args.grad_accum):
            ids = torch.randint(0, vocab, (args.batch_size, args.seq_len), generator=generator)
            ids = ids.to(device)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=on_gpu):  # Trainer's bf16
                loss = causal_lm_loss(model, ids, full_logits=args.full_logits)
            (loss / args.grad_accum).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if on_gpu:
            torch.cuda.synchronize()

    _reset_peak(device)
    seconds = []
    for _ in range(args.warmup + args.steps):
        started = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - started)
    # The median step: one step slowed by a neighbour's burst on a shared CPU barely moves it.
    median = statistics.median(seconds[args.warmup:])
    samples = args.batch_size * args.grad_accum  # per optimizer step
    return {
        "method": method, "layers": model.config.num_hidden_layers, "device": device,
        "peak_memory_bytes": _memory(device, peak=True) - baseline,
        "loaded_memory_bytes": loaded, "baseline_bytes": baseline,
        "memory_kind": "cuda_max_allocated" if on_gpu else "peak_rss_minus_idle",
        "step_seconds": [round(s, 3) for s in seconds], "warmup_steps": args.warmup,
        "samples_per_second": round(samples / median, 4),
        "seconds_per_sample": median / samples,
        "trainable_params": sum(p.numel() for p in trainable),
        "dtype": str(next(p for p in model.parameters() if p.is_floating_point()).dtype),
    }


def _child(args: argparse.Namespace) -> None:
    import logging

    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    model_dir = Path(args.model_dir)
    if args.child == "build":
        build_base(llama2_7b_config(args.child_layers), model_dir, args.device)
        return
    result = measure(args.child, model_dir, args.device, args)
    Path(args.result).write_text(json.dumps(result))


def _run_child(role: str, args: argparse.Namespace, extra: list[str]) -> dict | None:
    """Run one role in a fresh process: None if it worked, else the error's last line."""
    cmd = [sys.executable, __file__, *args.argv, "--child", role, "--device", args.device, *extra]
    done = subprocess.run(cmd, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
        last = lines[-1][:200] if lines else "no message"
        return {"error": f"exit code {done.returncode}: {last}"}
    return None


# -- the table -----------------------------------------------------------------------------------


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """(intercept, slope) of the least-squares line; a single point gives slope 0."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0
    return my - slope * mx, slope


def at_full_depth(runs: list[dict], full_layers: int = FULL_LAYERS) -> dict | None:
    """Peak memory and samples/s at ``full_layers``: measured if it was run, else extrapolated."""
    ok = [r for r in runs if "error" not in r]
    exact = [r for r in ok if r["layers"] == full_layers]
    if exact:
        r = exact[0]
        return {"memory_bytes": r["peak_memory_bytes"], "samples_per_second":
                r["samples_per_second"], "kind": "measured"}
    if len({r["layers"] for r in ok}) < 2:
        return None
    xs = [r["layers"] for r in ok]
    a, b = fit_line(xs, [r["peak_memory_bytes"] for r in ok])
    c, d = fit_line(xs, [r["seconds_per_sample"] for r in ok])
    # Time that did not grow with depth is noise (a busy machine), not a trend to extend.
    return {"memory_bytes": a + b * full_layers, "per_layer_bytes": b,
            "samples_per_second": 1 / (c + d * full_layers) if d > 0 else None,
            "per_layer_seconds_per_sample": d, "kind": "extrapolated"}


def summarize(runs: dict[str, list[dict]], counts: dict[str, tuple[int, int]],
              full_layers: int = FULL_LAYERS) -> dict:
    rows = {}
    for method, method_runs in runs.items():
        trainable, total = counts[method]
        deepest = max((r for r in method_runs if "error" not in r), key=lambda r: r["layers"],
                      default=None)
        rows[method] = {"trainable_params": trainable, "total_params": total,
                        "trainable_percent": 100 * trainable / total, "deepest": deepest,
                        "full_depth": at_full_depth(method_runs, full_layers),
                        "errors": [r["error"] for r in method_runs if "error" in r]}
    ratios = {}
    full = rows.get("full", {}).get("full_depth")
    for method in ("lora", "qlora"):
        mine = rows.get(method, {}).get("full_depth")
        if mine and full:
            ratios[f"{method}_to_full_memory"] = mine["memory_bytes"] / full["memory_bytes"]
    ratios["study_lora_to_full_memory"] = STUDY["lora_memory_gb"] / STUDY["full_memory_gb"]
    return {"rows": rows, "ratios": ratios, "study": STUDY}


def _study_cell(method: str) -> str:
    if method == "lora":
        return (f"{STUDY['trainable_params'] / 1e6:.1f} M trainable; {STUDY['lora_memory_gb']} GB;"
                f" {STUDY['samples_per_second']} samples/s")
    return f"{STUDY['full_memory_gb']} GB" if method == "full" else "not reported"


def markdown(summary: dict, args: argparse.Namespace) -> str:
    device = summary.get("device", args.device)
    lines = [
        f"| method | trainable params (7B shape, exact) | % of total | peak memory, measured "
        f"({device}) | peak memory at {FULL_LAYERS} layers | samples/s, measured | samples/s "
        f"at {FULL_LAYERS} layers | study |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method, row in summary["rows"].items():
        deep, full = row["deepest"], row["full_depth"]
        if deep:
            mem = f"{deep['peak_memory_bytes'] / GB:.2f} GB ({deep['layers']} layers)"
            sps = f"{deep['samples_per_second']:.3f} ({deep['layers']} layers)"
        else:
            mem = sps = "failed: " + "; ".join(row["errors"])[:120]
        mem32 = f"{full['memory_bytes'] / GB:.1f} GB ({full['kind']})" if full else "n/a"
        sps32 = "n/a" if not full else (
            f"{full['samples_per_second']:.3f} ({full['kind']})" if full["samples_per_second"]
            else "n/a (time fell with depth: noise)")
        lines.append(f"| {method} | {row['trainable_params']:,} | "
                     f"{row['trainable_percent']:.3f}% | {mem} | {mem32} | {sps} | {sps32} | "
                     f"{_study_cell(method)} |")
    ratios = summary["ratios"]
    lines.append("")
    for method in ("lora", "qlora"):
        key = f"{method}_to_full_memory"
        if key in ratios:
            lines.append(f"- {method} / full peak memory at {FULL_LAYERS} layers: "
                         f"{ratios[key]:.3f} (study, LoRA / full: "
                         f"{ratios['study_lora_to_full_memory']:.3f})")
    return "\n".join(lines) + "\n"


def markdown_model(summary: dict) -> str:
    """The table for ``--model``: one depth, all measured, so no extrapolated or study columns."""
    model, device = summary["model"], summary["device"]
    depth = f"measured, {model['layers']} layers"
    lines = [
        f"Model: **{model['name']}** ({model['architecture']}, {model['parameters']:,} "
        f"parameters, {model['layers']} layers), `{model['path']}`", "",
        f"| method | trainable params (exact) | % of total | peak memory ({device}) | samples/s |",
        "|---|---|---|---|---|",
    ]
    for method, row in summary["rows"].items():
        run = row["deepest"]
        if run:
            mem = f"{run['peak_memory_bytes'] / GB:.3f} GB ({depth})"
            sps = f"{run['samples_per_second']:.3f} ({depth})"
        else:
            mem = sps = "failed: " + "; ".join(row["errors"])[:120]
        lines.append(f"| {method} | {row['trainable_params']:,} | "
                     f"{row['trainable_percent']:.3f}% | {mem} | {sps} |")
    ratios = summary["ratios"]
    lines.append("")
    for method in ("lora", "qlora"):
        key = f"{method}_to_full_memory"
        if key in ratios:
            lines.append(f"- {method} / full peak memory ({depth}): {ratios[key]:.3f} (the "
                         f"study's LLaMA-2-7B, LoRA / full: "
                         f"{ratios['study_lora_to_full_memory']:.3f})")
    return "\n".join(lines) + "\n"


# -- the command ---------------------------------------------------------------------------------


def _resolve_device(choice: str) -> str:
    import torch

    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but torch sees no GPU; use --device cpu")
    return choice


def _check_cpu_fits(args: argparse.Namespace) -> None:
    """Refuse, with the fix, a CPU run whose model states alone can't fit in this machine's RAM."""
    config = llama2_7b_config(max(args.layer_list))
    per_layer = 4 * config.hidden_size ** 2 + 3 * config.hidden_size * config.intermediate_size
    params = 2 * config.vocab_size * config.hidden_size + config.num_hidden_layers * per_layer
    _refuse_over_ram(params, args, f"{config.num_hidden_layers} layers",
                     "measure shallow copies and extrapolate, e.g. --layers 1,2")


def _refuse_over_ram(params: int, args: argparse.Namespace, what: str, fix: str) -> None:
    need = params * (16 if "full" in args.method_list else 4)  # fp32; full adds grads + AdamW
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > ram:
        raise SystemExit(f"error: {what} need over {need / GB:.0f} GB in fp32 on CPU, this "
                         f"machine has {ram / GB:.0f} GB; {fix}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--layers", default=str(FULL_LAYERS),
                   help="Comma-separated depths to measure; with two or more and no "
                        f"{FULL_LAYERS}, the {FULL_LAYERS}-layer figures are extrapolated.")
    p.add_argument("--model", default=None,
                   help="Measure this model instead of the random 7B shape: a directory with "
                        "config.json and weights (e.g. $LORAFORGE_HOME/bases/smollm2) or a "
                        "registered base's name; its own config and weights, at its full depth "
                        "only (no --layers, nothing extrapolated).")
    p.add_argument("--seq-len", type=int, default=512, help="Tokens per sample.")
    p.add_argument("--batch-size", type=int, default=1, help="Samples per micro-batch.")
    p.add_argument("--grad-accum", type=int, default=4,
                   help="Micro-batches per optimizer step (assumed: the study's exact batch "
                        "settings are not known; batch 1 x 4 is a common Colab setting).")
    p.add_argument("--steps", type=int, default=3,
                   help="Measured optimizer steps; samples/s comes from the median step.")
    p.add_argument("--warmup", type=int, default=1, help="Unmeasured optimizer steps first.")
    p.add_argument("--methods", default=",".join(METHODS), help="Which of lora,qlora,full.")
    p.add_argument("--rank", type=int, default=16, help="LoRA rank.")
    p.add_argument("--alpha", type=float, default=32, help="LoRA alpha (no effect on cost).")
    p.add_argument("--dropout", type=float, default=0.05, help="LoRA dropout.")
    p.add_argument("--target-modules", default=ALL_PROJECTIONS, help="LoRA targets.")
    p.add_argument("--lr", type=float, default=2e-4, help="AdamW learning rate.")
    p.add_argument("--gradient-checkpointing", action="store_true",
                   help="Recompute activations in backward (off, like loraforge train).")
    p.add_argument("--low-memory", action="store_true",
                   help="As loraforge train --low-memory: gradient checkpointing, freed memory "
                        "returned to the OS at once, small LM-head tiles on CPU.")
    p.add_argument("--full-logits", action="store_true",
                   help="Take the loss from the whole logits (transformers' own loss) instead of "
                        "TRL's fused LM head, which loraforge train uses.")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="Where to train.")
    p.add_argument("--workdir", type=Path, default=None,
                   help="Where the random bases are saved (if not given: a temp dir, removed "
                        "after).")
    p.add_argument("--out", type=Path, default=None,
                   help="Also write the results: Markdown if it ends in .md, else JSON.")
    for hidden in ("--child", "--child-layers", "--model-dir", "--result"):
        p.add_argument(hidden, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # passed on to each child
    if args.child_layers:
        args.child_layers = int(args.child_layers)
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        p.error(f"unknown method(s) {', '.join(unknown)}; pick from {', '.join(METHODS)}")
    args.method_list = methods
    try:
        args.layer_list = sorted({int(x) for x in args.layers.split(",") if x})
    except ValueError:
        p.error(f"--layers takes comma-separated integers such as 1,2, got {args.layers!r}")
    if not args.layer_list or min(args.layer_list) < 1:
        p.error(f"--layers must be at least 1, got {args.layers!r}")
    if args.model and args.layers != str(FULL_LAYERS):
        p.error("--layers does not apply with --model: the model is measured at its own depth")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        _child(args)
        return
    import shutil

    args.device = _resolve_device(args.device)
    if args.model:
        run_model(args)
        return
    if args.device == "cpu":
        _check_cpu_fits(args)
    counts = {m: count_on_meta(llama2_7b_config(), m, args) for m in args.method_list}
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="lf-paper-"))
    runs: dict[str, list[dict]] = {m: [] for m in args.method_list}
    try:
        for layers in args.layer_list:
            model_dir = workdir / f"base-{layers}"
            print(f"building a {layers}-layer base…", file=sys.stderr, flush=True)
            failed = _run_child("build", args, ["--child-layers", str(layers),
                                                "--model-dir", str(model_dir)])
            if failed:
                raise SystemExit(f"error: building the {layers}-layer base failed: "
                                 f"{failed['error']}")
            for method in args.method_list:
                runs[method].append(_measure_in_child(method, model_dir, workdir, layers, args))
            shutil.rmtree(model_dir, ignore_errors=True)  # a 7B base is 13 GB on disk
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    summary = summarize(runs, counts) | {"device": args.device, "runs": runs,
                                         "setup": _setup(args)}
    _emit(markdown(summary, args), summary, args)


def run_model(args: argparse.Namespace) -> None:
    """``--model``: each method, in its own process, on that model's weights at its full depth."""
    import shutil

    from transformers import AutoConfig

    model_dir = resolve_model(args.model)
    config = AutoConfig.from_pretrained(model_dir)
    layers, params = config.num_hidden_layers, count_on_meta(config, "full", args)[1]
    if args.device == "cpu":
        _refuse_over_ram(params, args, f"{model_dir.name}'s {params:,} parameters",
                         "measure on a GPU (--device cuda) or leave full out of --methods")
    counts = _model_counts(config, args)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="lf-paper-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        runs = {m: [_measure_in_child(m, model_dir, workdir, layers, args)]
                for m in args.method_list}
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    model = {"name": model_dir.name, "path": str(model_dir), "parameters": params,
             "layers": layers, "architecture": (config.architectures or [config.model_type])[0]}
    summary = summarize(runs, counts, layers) | {
        "device": args.device, "model": model, "runs": runs,
        "setup": _setup(args) | {"layers": layers, "model": str(model_dir)}}
    _emit(markdown_model(summary), summary, args)


def _model_counts(config, args: argparse.Namespace) -> dict[str, tuple[int, int]]:
    try:
        return {m: count_on_meta(config, m, args) for m in args.method_list}
    except ValueError as exc:  # PEFT: a --target-modules name this architecture doesn't have
        raise SystemExit(f"error: {str(exc).splitlines()[0]}; set --target-modules to the "
                         "model's own projection names") from exc


def _measure_in_child(method: str, model_dir: Path, workdir: Path, layers: int,
                      args: argparse.Namespace) -> dict:
    """One method at one depth in a fresh process: its figures, or its error and depth."""
    print(f"measuring {method} at {layers} layers…", file=sys.stderr, flush=True)
    result = workdir / f"{method}-{layers}.json"
    failed = _run_child(method, args, ["--model-dir", str(model_dir), "--result", str(result)])
    return failed | {"layers": layers} if failed else json.loads(result.read_text())


def _emit(table: str, summary: dict, args: argparse.Namespace) -> None:
    print(table)
    if args.out:
        args.out.write_text(table if args.out.suffix == ".md" else json.dumps(summary, indent=1))


def _setup(args: argparse.Namespace) -> dict:
    keys = ("layers", "seq_len", "batch_size", "grad_accum", "steps", "warmup", "rank", "alpha",
            "dropout", "target_modules", "lr", "gradient_checkpointing", "low_memory",
            "full_logits", "device")
    return {k: getattr(args, k) for k in keys}


if __name__ == "__main__":
    main()
