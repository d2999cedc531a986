"""The thin pipeline end to end at a tiny size: crawl → snapshot → base → LoRA → chat app.

Every stage is the real one: Scrapy crawls the demo site over loopback into SQLite, the base
and adapter are trained, and the question goes through the Gradio app over HTTP.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from gradio_client import Client
from rouge_score import rouge_scorer

from loraforge.demo import DemoConfig, run_pipeline
from registry.adapters import get_adapter
from registry.article_store import get_crawl_run
from registry.snapshots import find_snapshot
from tests.ui.conftest import free_port
from ui.cli import launch
from ui.engine import BASE_ONLY

QUESTIONS_ASKED = 3


def ask(client: Client, choice: str, question: str) -> str:
    history, _ = client.predict(choice, question, [], 96, api_name="/chat")
    return "".join(part["text"] for part in history[-1]["content"])


@pytest.mark.slow
def test_adapter_answers_training_questions_closer_than_the_base(home: Path) -> None:
    config = DemoConfig(limit=24, base_steps=150, train_steps=150)
    result = run_pipeline(config)

    crawl = get_crawl_run(result.crawl_run_id)
    assert crawl.status == "finished" and crawl.items_stored > 0
    adapter = get_adapter(result.adapter_id)
    for key in ("trainable_params", "total_params", "peak_memory_bytes", "wall_seconds",
                "samples_per_second", "tokens_per_second", "final_loss"):
        assert adapter.metrics[key] > 0, key

    snapshot = find_snapshot(config.snapshot)
    with open(Path(snapshot.path) / "train.jsonl", encoding="utf-8") as lines:
        chats = [json.loads(line)["messages"] for line in lines][:QUESTIONS_ASKED]

    app, url = launch(host="127.0.0.1", port=free_port(), block=False)
    try:
        client = Client(url, verbose=False)
        scorer = rouge_scorer.RougeScorer(["rougeL"])
        adapter_score = base_score = 0.0
        for chat in chats:
            question, reference = chat[-2]["content"], chat[-1]["content"]
            adapter_score += scorer.score(reference, ask(client, adapter.label, question))[
                "rougeL"].fmeasure
            base_score += scorer.score(reference, ask(client, BASE_ONLY, question))[
                "rougeL"].fmeasure
    finally:
        app.close()
    assert adapter_score > base_score, (adapter_score, base_score)
    # Not a coin flip: the adapter reproduces much of its training answers.
    assert adapter_score / QUESTIONS_ASKED > 0.3, adapter_score
