"""The Adapters, Data and Train tabs driven over HTTP with gradio_client, on a real store."""

from __future__ import annotations

import sys

import pytest
from gradio_client import Client

from registry.adapters import get_adapter, get_run, list_runs
from registry.article_store import ArticleRecord, QARecord, open_crawl_run, store_articles
from trainers.run import checkpoints_dir
from ui.components.train import train_argv


@pytest.fixture
def client(served) -> Client:
    _, url = served
    return Client(url, verbose=False)


def _stored_articles() -> None:
    run = open_crawl_run("qa", {"test": True}, url=None)
    store_articles(run, [
        ArticleRecord(url="http://site.test/a", title="Asthma basics", text="Asthma text.",
                      topic="asthma", language="en",
                      qa_pairs=[QARecord("What is asthma?", "A lung disease.")]),
        ArticleRecord(url="http://site.test/b", title="Gout basics", text="Gout text.",
                      topic="gout", language="en"),
        ArticleRecord(url="http://site.test/c", title="Asthma care", text="More asthma.",
                      topic="asthma", language="en"),
    ])


def test_registry_table_lists_both_adapters_and_their_lineage(client: Client):
    table, _memory, _seconds, picker = client.predict(api_name="/registry")
    labels = [row[0] for row in table["data"]]
    assert labels == ["alpha:v1", "beta:v1"]
    assert table["headers"][:3] == ["label", "base", "method"]
    lineage, _loss = client.predict("beta:v1", api_name="/adapter_detail")
    assert "beta:v1" in lineage and "tiny-chat" in lineage


def test_push_failures_are_messages_not_tracebacks(client: Client):
    assert client.predict("alpha:v1", "not a repo id!", True, api_name="/push").startswith("⚠️")
    assert "Pick an adapter" in client.predict(None, "me/x", True, api_name="/push")


def test_data_tab_counts_topics_browses_and_shows_an_article(client: Client):
    _stored_articles()
    runs, topics = client.predict(api_name="/data")
    assert len(runs["data"]) == 1
    browsed = client.predict("asthma", api_name="/articles")
    assert [row[1] for row in browsed["data"]] == ["Asthma basics", "Asthma care"]
    text = client.predict(browsed["data"][0][0], api_name="/article")
    assert text.startswith("### Asthma basics") and "Asthma text." in text
    assert "No article #999" in client.predict(999, api_name="/article")


def test_snapshot_build_runs_the_cli_and_reports_its_error(client: Client):
    log = client.predict("", "qa", "no-such-topic", None, api_name="/build_snapshot")
    # the job's own result event carries the CLI's one-line error
    assert log.splitlines()[-1].startswith("✗ failed: unknown topic 'no-such-topic'"), log
    assert "Traceback" not in log


def test_failed_training_run_ends_in_a_message_and_no_done_flag(client: Client):
    log, _curve, _progress, result, done = client.predict("lora", "no-such-base", "", 4, 3e-3,
                                                          2, api_name="/train")
    assert done == "failed"
    assert result.startswith("failed: ") and "no-such-base" in result
    assert "Traceback" not in log


def test_train_argv_is_a_list_and_refuses_bad_values():
    argv = train_argv("lora", "tiny; rm -rf /", "snap", 8, 0.003, 20)
    assert argv[:3] == [sys.executable, "-m", "loraforge"]
    assert "tiny; rm -rf /" in argv  # one argument, never parsed by a shell
    # the limits and words of the method's config dataclass, as the CLI would say them
    for bad, message in [(("lora", "b", "", 0, 1e-3, 5), "rank must be at least 1, got 0"),
                         (("lora", "b", "", 8, -1.0, 5), "learning rate must be positive"),
                         (("full", "b", "", 0, 1e-3, 0), "max steps must be at least 1, got 0")]:
        with pytest.raises(Exception, match=message):
            train_argv(*bad)
    assert "--rank" in train_argv("lora", "b", "", 2048, 1e-3, 5)  # no limit the config lacks


@pytest.mark.slow
def test_training_from_the_train_tab_adds_an_adapter_to_the_picker(client: Client):
    _stored_articles()
    log = client.predict("ui-snap", "qa", "", None, api_name="/build_snapshot")
    assert log.endswith("✓ done: ui-snap"), log
    # Two users start a training at once; each sees its own run and adapter, as the jobs'
    # result events name them (not "the newest run", which one of them would get wrong).
    # The second ticks "Low memory"; the first leaves it out, as clients older than it do.
    jobs = [client.submit("lora", "tiny-chat", "ui-snap", 4, 3e-3, 5, api_name="/train"),
            client.submit("lora", "tiny-chat", "ui-snap", 2, 3e-3, 5, True, api_name="/train")]
    results = [job.result() for job in jobs]
    labels = []
    for (log, curve, progress, result, done), rank in zip(results, (4, 2), strict=True):
        assert done == "ok", log
        assert progress.startswith("step 5/5"), progress  # from the job's progress events
        label, run_id = result.split(" (run #")
        run = get_run(int(run_id.rstrip(")")))
        adapter = get_adapter(label)
        assert adapter.training_run_id == run.id and run.config["rank"] == rank
        assert run.config["low_memory"] is (rank == 2) is run.config["gradient_checkpointing"]
        # 5 steps: the trainer records the loss every 5 steps by default.
        assert [row[0] for row in curve["data"]] == [5]
        assert curve["data"][0][1] == pytest.approx(run.loss_curve[0]["loss"])
        labels.append(label)
    assert len(set(labels)) == 2
    update = client.predict("alpha:v1", api_name="/list_adapters")
    new = [value for _, value in update["choices"]][3:]
    assert sorted(new) == sorted(labels), update["choices"]
    history, _ = client.predict(new[0], "What is asthma?", [], 8, api_name="/chat")
    assert history[-1]["role"] == "assistant"


def test_train_argv_passes_a_rank_only_to_methods_that_have_one():
    assert "--rank" in train_argv("lora", "tiny", "snap", 8, 0.003, 20)
    assert "--rank" not in train_argv("full", "tiny", "snap", 8, 0.003, 20)
    assert "--low-memory" in train_argv("lora", "tiny", "snap", 8, 0.003, 20, True)
    assert "--low-memory" not in train_argv("lora", "tiny", "snap", 8, 0.003, 20)


@pytest.mark.slow
def test_a_training_cancelled_from_the_tab_resumes_from_its_checkpoint(client: Client):
    import time

    _stored_articles()
    assert client.predict("ui-snap", "qa", "", None, api_name="/build_snapshot").endswith(
        "✓ done: ui-snap")
    # 400 steps with a checkpoint every 50 (the default): cancel once the first checkpoint is
    # on disk, watched there rather than through the page, which may show it later.
    job = client.submit("lora", "tiny-chat", "ui-snap", 4, 3e-3, 400, api_name="/train")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not job.done():
        runs = list_runs()
        if runs and (checkpoints_dir(runs[0].id) / "checkpoint-50" / "trainer_state.json"
                     ).exists():
            break
        time.sleep(0.05)
    assert client.predict(api_name="/cancel_training").startswith("cancelled")
    _log, _curve, _progress, result, done = job.result()
    assert (result, done) == ("cancelled: stopped on request", "failed")
    [run] = list_runs()
    assert run.status == "failed" and run.error.startswith("interrupted;")
    assert client.predict(api_name="/cancel_training") == "no training of this page is running"
    # The newest complete checkpoint: 50, or a later one on a machine fast enough to reach it
    # before the signal did.
    newest = max(int(p.parent.name.split("-")[1])
                 for p in checkpoints_dir(run.id).glob("checkpoint-*/trainer_state.json"))
    assert 50 <= newest < 400

    _log, curve, progress, result, done = client.predict(api_name="/resume_training")
    assert done == "ok" and progress.startswith("step 400/400"), result
    [run] = list_runs()  # the same run, finished from its checkpoint
    assert run.status == "succeeded" and run.metrics["resumed_from_step"] == newest
    assert result == f"{get_adapter('tiny-chat-lora').label} (run #{run.id})"
