"""Fixtures for the registry tests: a store with full lineage, and a local Hub server.

The adapters come from the chat UI's tiny real Llama (``tests/ui/conftest.py``); the lineage
rows (source → crawl run → articles → QA pairs → snapshot → run → adapter) are written here.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from registry.db import session_scope
from registry.models import (
    Adapter,
    Article,
    BaseModel,
    CrawlRun,
    CrawlStatus,
    DatasetMember,
    DatasetSnapshot,
    QAPair,
    RunStatus,
    Source,
    Split,
    TrainingRun,
)
from tests.hub_server import HubHTTPServer, start_hub
from tests.ui.conftest import TinyModelFiles, free_port, tiny_model_files  # noqa: F401 (fixture)

HUB_TOKEN = "hf_test_SECRET_token_do_not_leak_4242"
ARTICLE_URLS = [f"https://demo.example/health/article-{i}" for i in range(3)]


@dataclass(frozen=True)
class LineageStore:
    home: Path
    files: TinyModelFiles
    alpha_path: Path  # inside LORAFORGE_HOME: the registry owns these files
    crawl_run_id: int
    run_id: int


def _add_lineage(session, base_id: int) -> tuple[int, int, int]:
    source = Source(name="demo-health", base_url="https://demo.example/")
    crawl = CrawlRun(spider="qa", source=source, status=CrawlStatus.finished, pages_seen=3,
                     items_stored=3)
    session.add_all([source, crawl])
    session.flush()
    snapshot = DatasetSnapshot(name="health-qa-s0", kind="qa", seed=0, content_hash="ab" * 32,
                               counts={"train": 4, "test": 2})
    session.add(snapshot)
    for i, url in enumerate(ARTICLE_URLS):
        article = Article(url=url, source_id=source.id, crawl_run_id=crawl.id,
                          title=f"Article {i}", text=f"Text {i}", topic="health", language="en",
                          content_hash=hashlib.sha256(url.encode()).hexdigest())
        session.add(article)
        for j in range(2):
            qa = QAPair(article=article, crawl_run_id=crawl.id, question=f"Q{i}.{j}?",
                        answer=f"A{i}.{j}.", source=url, topic="health",
                        content_hash=hashlib.sha256(f"{url}{j}".encode()).hexdigest())
            session.add(qa)
            session.add(DatasetMember(snapshot=snapshot, qa_pair=qa,
                                      split=Split.test if j else Split.train))
    session.flush()
    run = TrainingRun(method="lora", base_model_id=base_id, snapshot_id=snapshot.id,
                      status=RunStatus.succeeded, config={"r": 8, "max_steps": 10},
                      metrics={"final_loss": 1.2345, "trainable_params": 8192})
    session.add(run)
    session.flush()
    return crawl.id, snapshot.id, run.id


@pytest.fixture
def lineage_store(home: Path, tiny_model_files: TinyModelFiles) -> LineageStore:  # noqa: F811
    """Base ``tiny-chat``; ``alpha:v1`` trained by a run on a crawled snapshot (files under
    LORAFORGE_HOME); ``beta:v1`` registered from a directory outside the home."""
    alpha_path = home / "adapters" / "alpha-v1"
    shutil.copytree(tiny_model_files.adapter_a, alpha_path)
    with session_scope() as session:
        base = BaseModel(name="tiny-chat", source="test", path=str(tiny_model_files.base))
        session.add(base)
        session.flush()
        crawl_id, snapshot_id, run_id = _add_lineage(session, base.id)
        session.add_all([
            Adapter(name="alpha", version=1, path=str(alpha_path), method="lora",
                    base_model_id=base.id, training_run_id=run_id, snapshot_id=snapshot_id,
                    metrics={"final_loss": 1.2345, "trainable_params": 8192, "rouge_l": 0.31},
                    tags=["medical"]),
            Adapter(name="beta", version=1, path=str(tiny_model_files.adapter_b),
                    method="lora", base_model_id=base.id, metrics={"final_loss": 2.5}),
        ])
    return LineageStore(home, tiny_model_files, alpha_path, crawl_id, run_id)


@dataclass(frozen=True)
class LocalHub:
    server: HubHTTPServer
    url: str
    token: str


@pytest.fixture
def local_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalHub]:
    """A Hub-compatible server on localhost, with HF_TOKEN for user ``alice`` and HF_ENDPOINT
    pointing at it; huggingface_hub's import-time switches are turned to match."""
    from huggingface_hub import constants

    server, thread = start_hub({HUB_TOKEN: "alice", "hf_bob_token": "bob"})
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    try:
        yield LocalHub(server, server.url, HUB_TOKEN)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def dead_endpoint() -> str:
    """A localhost URL on which nothing listens."""
    return f"http://127.0.0.1:{free_port()}"
