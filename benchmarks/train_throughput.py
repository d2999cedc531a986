"""Our LoRA path vs a plain TRL SFTTrainer (padded batches, default settings), in one run.

    python benchmarks/train_throughput.py                      # CPU-sized defaults
    python benchmarks/train_throughput.py --hidden 2048 --layers 16 --batch-size 16 --steps 30
    python benchmarks/train_throughput.py --model "$LORAFORGE_HOME/bases/smollm2"  # a real model
    python benchmarks/train_throughput.py --processes 2   # our LoRA: 1 process vs 2 (DDP)

Same model (a Llama built from a config, or ``--model``'s directory with its tokenizer and chat
template), same chats with uneven answer lengths, same LoRA config, learning rate, batch size,
max length and steps. Prints tokens/s (real, non-padding tokens) and peak memory for each, the
ratios, and the memory ratio of LoRA to a full fine-tune on our path. Each variant runs in its
own process, so on CPU its peak resident memory is its own; on CUDA peak memory is
``torch.cuda.max_memory_allocated``.

With ``--processes N`` it instead compares our LoRA path in one process against the same run
under ``accelerate launch`` of N processes (examples/accelerate/ddp.yaml: GPUs, or gloo on CPU),
same global batch and steps, and reports tokens/s of each and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.model_arg import resolve_model  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")

VARIANTS = ("ours", "trl-default", "ours-full")
WORDS = ("the patient may feel pain in the joints and muscles while doctors test blood "
         "pressure heart rate and sugar levels to find the cause of symptoms such as fever "
         "cough fatigue and weight loss treatment includes rest fluids exercise and "
         "medicine").split()


def build_data(workdir: Path, examples: int, seed: int) -> list[dict]:
    """Chats whose answers run from a few words to a few hundred, written as train.jsonl."""
    rng = random.Random(seed)
    chats = []
    for i in range(examples):
        n = int(round(2 ** rng.uniform(3, 8.5)))  # 8 to ~360 words, log-uniform: uneven
        question = f"Question {i}: what about " + " ".join(rng.choices(WORDS, k=6)) + "?"
        chats.append({"messages": [{"role": "user", "content": question},
                                   {"role": "assistant",
                                    "content": " ".join(rng.choices(WORDS, k=n))}]})
    data = workdir / "data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "train.jsonl").write_text("".join(json.dumps(c) + "\n" for c in chats))
    return chats


def build_model(workdir: Path, chats: list[dict], hidden: int, layers: int, seed: int) -> None:
    """A Llama from a config, with a tokenizer (and ChatML template) trained on the answers."""
    import torch
    from transformers import LlamaForCausalLM

    from trainers.base_model import make_config, train_tokenizer

    torch.manual_seed(seed)
    tokenizer = train_tokenizer([c["messages"][1]["content"] for c in chats[:50]], 512)
    model = LlamaForCausalLM(make_config(tokenizer, hidden, layers, seq_len=512))
    model.save_pretrained(workdir / "model")
    tokenizer.save_pretrained(workdir / "model")


def model_dir(workdir: Path, args: argparse.Namespace) -> Path:
    """What both variants train: ``--model``'s directory, else the Llama built in ``workdir``."""
    return Path(args.model) if args.model else workdir / "model"


def check_chat_template(path: Path) -> dict:
    """The model's shape for the report; refuses, before any training, a tokenizer without a
    chat template: both variants render the chats with it, and would fail in their first step."""
    from transformers import AutoConfig, AutoTokenizer

    if not AutoTokenizer.from_pretrained(path).chat_template:
        raise SystemExit(f"error: the tokenizer in {path} has no chat template; both variants "
                         "train on chats rendered with the model's own template")
    config = AutoConfig.from_pretrained(path)
    return {"model": str(path), "hidden": config.hidden_size,
            "layers": config.num_hidden_layers}


def _peak_memory(device: str) -> int:
    from trainers.metrics import peak_memory_bytes

    return peak_memory_bytes(device)


def run_ours(workdir: Path, args: argparse.Namespace, method: str) -> dict:
    from core.device import resolve_device
    from trainers.discovery import get_backend

    backend = get_backend(method)
    fields = {"max_steps": args.steps, "batch_size": args.batch_size, "max_length": args.max_length,
              "learning_rate": args.lr, "save_steps": 0, "generate_examples": 0,
              "progress_bar": False, "warmup_ratio": 0.0, "logging_steps": 5}
    if method == "lora":
        fields.update(rank=args.rank, alpha=2 * args.rank, dropout=0.0)
    config = backend.config_class(**fields)
    result = backend.train(str(model_dir(workdir, args)), workdir / "data" / "train.jsonl", None,
                           workdir / f"out-{method}", config)
    m = result.metrics
    return {"tokens": m["tokens_seen"], "seconds": m["wall_seconds"],
            "peak_memory_bytes": _peak_memory(resolve_device()), "device": m["device"]}


def run_trl_default(workdir: Path, args: argparse.Namespace) -> dict:
    """TRL as its docs show it: SFTTrainer + LoraConfig, everything else left at its default."""
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from core.device import resolve_device

    device = resolve_device()
    data = load_dataset("json", data_files=str(workdir / "data" / "train.jsonl"))["train"]
    data = data.map(lambda ex: {"prompt": ex["messages"][:-1], "completion": ex["messages"][-1:]},
                    remove_columns=["messages"])
    # The model's own tokenizer, so its chat template renders the chats, as on our path.
    tokenizer = AutoTokenizer.from_pretrained(model_dir(workdir, args))
    model = AutoModelForCausalLM.from_pretrained(model_dir(workdir, args))
    sft_args = SFTConfig(
        output_dir=str(workdir / "out-trl"), max_steps=args.steps, learning_rate=args.lr,
        per_device_train_batch_size=args.batch_size, max_length=args.max_length,
        logging_steps=5, save_strategy="no", report_to="none", disable_tqdm=True,
        use_cpu=not device.startswith("cuda"),
        bf16=device.startswith("cuda") and torch.cuda.is_bf16_supported(),
        # Only counts tokens, so both sides report real (non-padding) tokens per second.
        include_num_input_tokens_seen="non_padding",
    )
    lora = LoraConfig(r=args.rank, lora_alpha=2 * args.rank, lora_dropout=0.0,
                      target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=sft_args, train_dataset=data,
                         processing_class=tokenizer, peft_config=lora)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    return {"tokens": int(trainer.state.num_input_tokens_seen), "seconds": round(seconds, 2),
            "peak_memory_bytes": _peak_memory(device), "device": device}


def child(variant: str, workdir: Path, args: argparse.Namespace) -> None:
    import logging

    from trainers import distributed

    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    if variant == "ours":
        result = run_ours(workdir, args, "lora")
    elif variant == "ours-full":
        result = run_ours(workdir, args, "full")
    else:
        result = run_trl_default(workdir, args)
    if distributed.is_main():  # under a launch, the main process reports for all
        (workdir / f"{args.result or variant}.json").write_text(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=256, help="Hidden size (default: 256).")
    parser.add_argument("--layers", type=int, default=4, help="Layers (default: 4).")
    parser.add_argument("--model", default=None,
                        help="Train this model instead: a directory with config.json, weights "
                             "and a tokenizer with a chat template (e.g. "
                             "$LORAFORGE_HOME/bases/smollm2) or a registered base's name; "
                             "--hidden and --layers are then ignored (default: a random Llama).")
    parser.add_argument("--steps", type=int, default=20, help="Optimizer steps (default: 20).")
    parser.add_argument("--batch-size", type=int, default=8, help="Batch size (default: 8).")
    parser.add_argument("--max-length", type=int, default=512, help="Max tokens (default: 512).")
    parser.add_argument("--rank", type=int, default=16, help="LoRA rank (default: 16).")
    parser.add_argument("--lr", type=float, default=2e-4, help="Learning rate (default: 2e-4).")
    parser.add_argument("--examples", type=int, default=400, help="Chats (default: 400).")
    parser.add_argument("--seed", type=int, default=0, help="Data and init seed (default: 0).")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="Scratch directory (default: a new temp dir).")
    parser.add_argument("--json", type=Path, default=None, help="Also write results here.")
    parser.add_argument("--processes", type=int, default=1,
                        help="Compare our LoRA in 1 process vs N processes (accelerate launch, "
                             "same global batch) instead of against TRL (default: 1: off).")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.variant:
        child(args.variant, args.workdir, args)
        return
    import tempfile

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="lf-bench-"))
    passthrough = sys.argv[1:] + prepare(workdir, args)
    if args.processes > 1:
        compare_processes(workdir, args, passthrough)
        return
    results = {}
    for variant in VARIANTS:
        print(f"running {variant}…", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, __file__, *passthrough, "--variant", variant,
                        "--workdir", str(workdir)], check=True)
        results[variant] = json.loads((workdir / f"{variant}.json").read_text())
    report(results, args)


def compare_processes(workdir: Path, args: argparse.Namespace, passthrough: list[str]) -> None:
    """Our LoRA run alone, then under `accelerate launch` of N processes; tokens/s of each."""
    from tests.ui.conftest import free_port

    n = args.processes
    if args.batch_size % n:
        raise SystemExit(f"--batch-size {args.batch_size} must split evenly over {n} processes")
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
              str(REPO_ROOT / "examples" / "accelerate" / "ddp.yaml"), "--num_processes",
              str(n), "--main_process_port", str(free_port())]
    results = {}
    for label, starter in (("1 process", [sys.executable]), (f"{n} processes", launch)):
        print(f"running {label}…", file=sys.stderr, flush=True)
        # The cores are shared out: one process gets them all, N processes a 1/N share each.
        share = max(1, (os.cpu_count() or 1) // (n if starter is launch else 1))
        env = {**os.environ, "OMP_NUM_THREADS": str(share)}
        subprocess.run([*starter, __file__, *passthrough, "--variant", "ours", "--result",
                        f"proc{label.split()[0]}", "--workdir", str(workdir)], check=True,
                       env=env)
        results[label] = json.loads((workdir / f"proc{label.split()[0]}.json").read_text())
    print(f"\nour LoRA, global batch {args.batch_size}, {args.steps} steps, "
          f"{results['1 process']['device']}")
    print("| processes | tokens/s | tokens | seconds | peak memory per process (MiB) |")
    print("|---|---|---|---|---|")
    for label, r in results.items():
        r["tokens_per_second"] = round(r["tokens"] / r["seconds"], 1) if r["seconds"] else 0.0
        print(f"| {label} | {r['tokens_per_second']:.0f} | {r['tokens']} | {r['seconds']} | "
              f"{r['peak_memory_bytes'] / 2**20:,.0f} |")
    ratio = results[f"{n} processes"]["tokens_per_second"] / \
        results["1 process"]["tokens_per_second"]
    print(f"\n{n} processes vs 1: {ratio:.2f}x tokens/s")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "ratio": round(ratio, 3)},
                                        indent=1))


def prepare(workdir: Path, args: argparse.Namespace) -> list[str]:
    """The chats, and the model unless ``--model`` names one; returns what the children need."""
    args.model_setup = {}
    if args.model:  # checked before anything is written
        args.model = str(resolve_model(args.model))
        args.model_setup = check_chat_template(Path(args.model))
    chats = build_data(workdir, args.examples, args.seed)
    if not args.model:
        build_model(workdir, chats, args.hidden, args.layers, args.seed)
        return []
    return ["--model", args.model]  # resolved, so children skip the lookup; the last one counts


def report(results: dict, args: argparse.Namespace) -> None:
    for r in results.values():
        r["tokens_per_second"] = round(r["tokens"] / r["seconds"], 1) if r["seconds"] else 0.0
    ours, trl, full = results["ours"], results["trl-default"], results["ours-full"]
    setup = {k: getattr(args, k) for k in ("hidden", "layers", "steps", "batch_size",
                                            "max_length", "rank", "examples")}
    summary = {
        "setup": setup | args.model_setup,
        "results": results,
        "speedup_tokens_per_second": round(ours["tokens_per_second"] / trl["tokens_per_second"],
                                           2),
        "memory_ratio_ours_to_trl": round(ours["peak_memory_bytes"] / trl["peak_memory_bytes"],
                                          3),
        "memory_ratio_lora_to_full": round(ours["peak_memory_bytes"] / full["peak_memory_bytes"],
                                           3),
    }
    kind = "CUDA max allocated" if ours["device"].startswith("cuda") else "process peak RSS"
    if args.model:
        print(f"\nmodel: {Path(args.model).name} ({summary['setup']['layers']} layers, hidden "
              f"{summary['setup']['hidden']}), {args.model}")
    print(f"\n| variant | tokens/s | peak memory (MiB, {kind}) | tokens | seconds |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['tokens_per_second']:.0f} | {r['peak_memory_bytes'] / 2**20:,.0f} "
              f"| {r['tokens']} | {r['seconds']} |")
    print(f"\nour LoRA vs TRL defaults: {summary['speedup_tokens_per_second']}x tokens/s, "
          f"{summary['memory_ratio_ours_to_trl']}x peak memory")
    print(f"LoRA vs full fine-tune peak memory: {summary['memory_ratio_lora_to_full']}x")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
