"""``loraforge adapters export``: an adapter as GGUF for llama.cpp, Ollama and LM Studio."""

from __future__ import annotations

import enum
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

console = Console()


class ExportFormat(str, enum.Enum):
    gguf = "gguf"


class Quant(str, enum.Enum):
    f16 = "f16"
    q8_0 = "q8_0"
    f32 = "f32"


def human_size(size: int) -> str:
    return f"{size / 1e3:,.1f} kB" if size < 1e6 else f"{size / 1e6:,.1f} MB"


def export_command(
    adapter: Annotated[str, typer.Argument(help="Adapter id, name:vN, or name (newest version).")],
    format: Annotated[ExportFormat, typer.Option(
        "--format", help="File format; GGUF is what llama.cpp, Ollama and LM Studio read.")
    ] = ExportFormat.gguf,
    quant: Annotated[Quant, typer.Option(
        "--quant", "-q", help="Weights of the merged file: f16 (default, near lossless), q8_0 "
        "(half the size, a small loss) or f32.")] = Quant.f16,
    merged: Annotated[bool, typer.Option(
        "--merged/--no-merged", help="Write the adapter folded into its base: one file that "
        "runs anywhere.")] = True,
    lora: Annotated[bool, typer.Option(
        "--lora/--no-lora", help="Also write the adapter alone, for llama.cpp's --lora and "
        "Ollama's ADAPTER, plus one base file every adapter of the base shares.")] = False,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Folder for the files; default: LORAFORGE_HOME/exports/NAME-vN.")] = None,
    verify: Annotated[bool, typer.Option(
        "--verify", help="Read the merged file back with transformers and compare its logits "
        "and greedy tokens with the merged PyTorch model.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Export an adapter to GGUF (merged, and optionally as a LoRA file), with an Ollama
    Modelfile beside it; the files are recorded against the adapter (`adapters show`)."""
    from publishing.export import export_gguf
    from registry import db

    db.ensure_schema()
    say = (lambda _text: None) if as_json else (lambda text: console.print(f"[dim]· {text}[/]"))
    bars = not as_json and sys.stderr.isatty()
    if not bars:  # a log file or a pipe gets the status lines, not redrawn bars
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    result = export_gguf(adapter, quantization=quant.value, out=out, merged=merged, lora=lora,
                         verify=verify, status=say, progress=bars)
    if as_json:
        typer.echo(json.dumps(asdict(result), indent=2, default=str))
        return
    table = Table("kind", "file", "weights", "size", "sha256", title=f"{result.adapter_label} "
                  f"as {format.value.upper()}")
    for f in result.files:
        table.add_row(f.kind, f.path.name, f.quantization, human_size(f.size_bytes),
                      f.sha256[:16])
    console.print(table)
    typer.echo(f"in {result.files[0].path.parent}" if result.files else "no files written")
    if result.round_trip is not None:
        check = result.round_trip
        typer.echo(f"read back by transformers: max |Δ logit| {check.max_abs_logit_diff:.2e}, "
                      f"greedy tokens equal {check.greedy_tokens_equal}/{check.greedy_tokens}")
    for f in result.files:
        if f.kind == "merged":
            typer.echo(f"llama.cpp:  llama-cli -m {f.path} -cnv")
        else:
            typer.echo(f"llama.cpp:  llama-cli -m {result.base_file} --lora {f.path} -cnv")
        name = result.ollama_name if f.kind == "merged" else f"{result.ollama_name}-lora"
        typer.echo(f"Ollama:     ollama create {name} -f {f.modelfile} && ollama run {name}")
