"""Commands that take adapters out of the store: ``adapters merge``, ``adapters export`` (GGUF
for llama.cpp, Ollama and LM Studio) and ``loraforge hub`` (push and pull)."""

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

from registry import db

console = Console()
hub_app = typer.Typer(help="Push adapters to and pull them from the Hugging Face Hub.",
                      no_args_is_help=True)
ADAPTER_HELP = "Adapter id, name:vN label, or name (its newest version)."


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


def merge_command(
    adapter: Annotated[str, typer.Argument(help=ADAPTER_HELP)],
    out: Annotated[Path, typer.Option("--out", help="New directory for the merged model.")],
) -> None:
    """Fold the adapter into its base and write the full model as safetensors."""
    from publishing.merge import merge_adapter

    db.ensure_schema()
    with console.status(f"merging {adapter} into its base"):
        path = merge_adapter(adapter, out)
    console.print(f"merged model → {path}")


@hub_app.command("push")
def hub_push(
    adapter: str = typer.Argument(..., help=ADAPTER_HELP),
    repo: str = typer.Option(..., "--repo", help="Target repo, OWNER/NAME."),
    private: bool = typer.Option(False, "--private", help="Create the repo as private."),
    revision: str = typer.Option("main", "--revision", help="Branch to push to (created if new)."),
    endpoint: str | None = typer.Option(
        None, "--endpoint", help="Hub URL; default: HF_ENDPOINT or https://huggingface.co."),
    exist_ok: bool = typer.Option(
        False, "--exist-ok", help="Push a new commit to a repo that already exists."),
    license: str = typer.Option("other", "--license", help="License id for the model card."),
    language: Annotated[list[str] | None, typer.Option(
        "--language", help="Language code (repeatable); default: the articles' languages.")] = None,
    dataset: Annotated[list[str] | None, typer.Option(
        "--dataset", help="Hub dataset id for the card (repeatable); default: snapshot name.")
    ] = None,
    gguf: bool = typer.Option(
        False, "--gguf", help="Also upload the adapter's GGUF exports (`adapters export`), with "
        "llama.cpp and Ollama instructions in the card."),
) -> None:
    """Upload an adapter with a generated model card. The token comes from HF_TOKEN or
    `hf auth login` and is never stored or printed."""
    from publishing.hub import push_adapter
    from publishing.model_card import CardOptions

    db.ensure_schema()
    card = CardOptions(license=license, language=tuple(language or ()),
                       datasets=tuple(dataset or ()))
    pub = push_adapter(adapter, repo, private=private, revision=revision, endpoint=endpoint,
                       exist_ok=exist_ok, card=card, gguf=gguf)
    console.print(f"pushed {pub.adapter_label} → {pub.url} (commit {pub.commit_sha[:12]})")


@hub_app.command("pull")
def hub_pull(
    repo: str = typer.Argument(..., help="Repo to fetch, OWNER/NAME."),
    revision: str | None = typer.Option(None, "--revision", help="Branch, tag or commit; "
                                        "default: main."),
    endpoint: str | None = typer.Option(
        None, "--endpoint", help="Hub URL; default: HF_ENDPOINT or https://huggingface.co."),
    name: str | None = typer.Option(None, "--name", help="Register under this name; default: "
                                    "the repo's name."),
    base: str | None = typer.Option(None, "--base", help="Registered base to attach it to; "
                                    "default: matched from adapter_config.json and the card."),
) -> None:
    """Download a PEFT adapter (safetensors only), validate it and register it."""
    from publishing.hub import pull_adapter

    db.ensure_schema()
    pulled = pull_adapter(repo, revision=revision, endpoint=endpoint, name=name, base=base)
    console.print(f"pulled {repo}@{pulled.revision[:12]} → {pulled.label} on base "
                  f"{pulled.base_name} ({pulled.path})")
