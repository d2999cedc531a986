"""The demo pipeline end to end at a small size, built once for the module.

Every stage is the real one: Scrapy crawls the demo site over loopback into SQLite, MiniLM and
K-Means pick the snapshot, ``loraforge`` child processes build the base and train the LoRA, LoRA+
and QLoRA adapters, the report is written from their recorded metrics, the real huggingface_hub
client pushes them to a local Hub server, and the questions go through the Gradio app over HTTP.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from gradio_client import Client
from rouge_score import rouge_scorer

from loraforge.demo import TINY_PRESET, DemoConfig, DemoResult, run_pipeline
from registry import db
from registry.adapters import get_adapter, list_adapters, list_runs
from registry.article_store import get_crawl_run
from registry.snapshots import find_snapshot
from serving.engine import BASE_ONLY
from tests.conftest import reset_caches
from tests.registry.conftest import LocalHub, local_hub  # noqa: F401 (fixture)
from tests.ui.conftest import free_port
from ui.cli import launch

# Small enough for CI on 2 cores, big enough for the LoRA adapter to learn its training answers.
SMALL = DemoConfig(base="tiny", limit=24, clusters=8, base_steps=100, train_steps=80)
DEFAULT_METHODS = TINY_PRESET.methods
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
METRICS = ("trainable_params", "total_params", "peak_memory_bytes", "wall_seconds",
           "samples_per_second", "tokens_per_second", "final_loss")

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class DemoRun:
    home: Path
    result: DemoResult


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoRun]:
    """One demo pipeline (stages 1-6) in a fresh LORAFORGE_HOME, shared by the tests below."""
    home = tmp_path_factory.mktemp("demo") / "home"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("LORAFORGE_HOME", str(home))
        env.delenv("LORAFORGE_DATABASE_URL", raising=False)
        reset_caches()
        try:
            yield DemoRun(home, run_pipeline(SMALL))
        finally:
            db.get_engine().dispose()
            reset_caches()


def ask(client: Client, choice: str, question: str) -> str:
    history, _ = client.predict(choice, question, [], 96, api_name="/chat")
    return "".join(part["text"] for part in history[-1]["content"])


def test_demo_records_three_adapters_with_metrics_and_a_report_naming_them(demo_run: DemoRun):
    result = demo_run.result
    assert result.failed == {}
    crawl = get_crawl_run(result.crawl_run_id)
    assert crawl.status == "finished" and crawl.qa_pairs > 0

    snapshot = find_snapshot(SMALL.snapshot)
    assert snapshot.counts["total"] == SMALL.limit  # 8 clusters x 3 pairs
    assert len(snapshot.counts["clusters"]) == SMALL.clusters

    assert set(result.adapter_ids) == set(DEFAULT_METHODS)
    labels = {}
    for method, adapter_id in result.adapter_ids.items():
        adapter = get_adapter(adapter_id)
        assert (adapter.name, adapter.method) == (f"demo-{method}", method)
        assert (adapter.base_name, adapter.snapshot_name) == ("tiny", SMALL.snapshot)
        for key in METRICS:
            assert adapter.metrics[key] > 0, (method, key)
        assert adapter.metrics["steps"] == SMALL.train_steps
        labels[method] = adapter.label
    assert "qlora_repack_repairs" in get_adapter(result.adapter_ids["qlora"]).metrics

    report = result.report.read_text()
    for method, label in labels.items():
        row = next(line for line in report.splitlines() if line.startswith(f"| {method} |"))
        assert "failed" not in row, row
        assert f"`{label}`" in report
    # Every evaluated answer is kept, so the report splits the gain by closeness to training.
    _, breakdown = report.split("### Where the gain comes from")
    for label in labels.values():
        assert any(line.startswith(f"| {label} | ") for line in breakdown.splitlines()), label
    for chart in ("memory", "time", "loss"):
        png = result.report.parent / f"demo-comparison-{chart}.png"
        assert png.read_bytes()[:8] == PNG_MAGIC, png
        assert f"]({png.name})" in report


def test_chat_app_lists_the_three_adapters_and_the_lora_one_answers_best(demo_run: DemoRun):
    labels = [get_adapter(i).label for i in demo_run.result.adapter_ids.values()]
    lora = get_adapter(demo_run.result.adapter_ids["lora"]).label
    snapshot = find_snapshot(SMALL.snapshot)
    with open(Path(snapshot.path) / "train.jsonl", encoding="utf-8") as lines:
        # Every training question: a sum over a few is too easily swayed by one answer
        chats = [json.loads(line)["messages"] for line in lines]

    app, url = launch(host="127.0.0.1", port=free_port(), block=False, base="tiny")
    try:
        client = Client(url, verbose=False)
        picker = client.predict(BASE_ONLY, api_name="/list_adapters")
        assert set(labels) <= {value for _, value in picker["choices"]}, picker["choices"]
        for label in labels:  # each adapter loads and answers, QLoRA's on the plain base too
            assert ask(client, label, chats[0][-2]["content"]).strip(), label

        scorer = rouge_scorer.RougeScorer(["rougeL"])
        adapter_score = base_score = 0.0
        for chat in chats:
            question, reference = chat[-2]["content"], chat[-1]["content"]
            adapter_score += scorer.score(reference, ask(client, lora, question))[
                "rougeL"].fmeasure
            base_score += scorer.score(reference, ask(client, BASE_ONLY, question))[
                "rougeL"].fmeasure
    finally:
        app.close()
    assert adapter_score > base_score, (adapter_score, base_score)


def test_push_sends_each_adapter_to_its_own_repo_once(
    demo_run: DemoRun, local_hub: LocalHub, capsys: pytest.CaptureFixture[str],  # noqa: F811
):
    config = dataclasses.replace(SMALL, push="alice/demo")
    result = run_pipeline(config)

    assert result.failed == {}
    assert sorted(result.published) == sorted(f"alice/demo-{m}" for m in DEFAULT_METHODS)
    repos = local_hub.server.hub.repos
    for method, adapter_id in demo_run.result.adapter_ids.items():
        adapter = get_adapter(adapter_id)
        files = repos[f"alice/demo-{method}"].resolve("main").files
        weights = Path(adapter.path) / "adapter_model.safetensors"
        assert files["adapter_model.safetensors"].data == weights.read_bytes()
        assert "adapter_config.json" in files
        assert b"base_model: tiny" in files["README.md"].data

    commits = {repo_id: len(repo.commits) for repo_id, repo in repos.items()}
    again = run_pipeline(config)  # a re-run finds the publications and pushes nothing
    assert sorted(again.published) == sorted(result.published)
    assert {repo_id: len(repo.commits) for repo_id, repo in repos.items()} == commits
    out = capsys.readouterr()
    assert "already on the Hub" in out.out
    assert local_hub.token not in out.out + out.err


def test_rerun_without_a_token_reuses_everything_and_skips_the_push(
    demo_run: DemoRun, tmp_path: Path,
):
    adapters_before = [a.label for a in list_adapters()]
    runs_before = len(list_runs())
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_OIDC_RESOURCE")}
    env.update(HF_HOME=str(tmp_path / "hf-home"), COLUMNS="200")  # no stored login; no wrapping
    done = subprocess.run(
        [sys.executable, "-m", "loraforge", "demo", "--no-ui", "--push", "alice/demo",
         "--base", "tiny",
         "--limit", str(SMALL.limit), "--train-steps", str(SMALL.train_steps)],
        env=env, capture_output=True, text=True, timeout=300, check=False)

    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "no Hugging Face token found, so nothing was pushed; run `hf auth login`" in done.stdout
    for method in DEFAULT_METHODS:
        assert f"reusing adapter demo-{method}:v1" in done.stdout
    assert "skipped: snapshot 'demo' was built earlier" in done.stdout
    assert [a.label for a in list_adapters()] == adapters_before
    assert len(list_runs()) == runs_before
