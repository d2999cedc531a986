"""Push and pull with the real huggingface_hub client against the local Hub server."""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from publishing.hub import HubError, pull_adapter, push_adapter
from publishing.model_card import CardOptions
from registry.db import session_scope
from registry.models import Adapter, Base, HubPublication
from tests.registry.conftest import ARTICLE_URLS, HUB_TOKEN, LineageStore, LocalHub

REPO_ROOT = Path(__file__).resolve().parents[2]


def store_state(home: Path) -> tuple[list[tuple], list[str]]:
    """Every row of every table, and every file under the adapters dir: 'unchanged' means equal."""
    with session_scope() as session:
        rows = [tuple(row) for table in Base.metadata.sorted_tables
                for row in session.execute(select(table)).all()]
    files = sorted(str(p.relative_to(home)) for p in (home / "adapters").rglob("*"))
    return rows, files


def repo_files(hub: LocalHub, repo_id: str, branch: str = "main") -> dict[str, bytes]:
    repo = hub.server.hub.repos[repo_id]
    return {path: f.data for path, f in repo.resolve(branch).files.items()}


def test_push_uploads_the_adapter_and_a_card_the_hub_client_parses(
    lineage_store: LineageStore, local_hub: LocalHub, caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from huggingface_hub import ModelCard

    caplog.set_level(logging.DEBUG)
    pub = push_adapter("alpha", "alice/alpha-lora",
                       card=CardOptions(license="apache-2.0"))

    files = repo_files(local_hub, "alice/alpha-lora")
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert files[name] == (lineage_store.alpha_path / name).read_bytes()
    stored = local_hub.server.hub.repos["alice/alpha-lora"].resolve("main").files
    weights_sha = hashlib.sha256(files["adapter_model.safetensors"]).hexdigest()
    assert stored["adapter_model.safetensors"].lfs_oid == weights_sha  # went through LFS
    assert stored["adapter_config.json"].lfs_oid is None  # went inline in the commit

    card = ModelCard(files["README.md"].decode())
    data = card.data.to_dict()
    assert data["base_model"] == "tiny-chat"
    assert data["library_name"] == "peft"
    assert data["pipeline_tag"] == "text-generation"
    assert {"lora", "peft", "medical"} <= set(data["tags"])
    assert data["datasets"] == ["health-qa-s0"]
    assert data["language"] == ["en"]
    assert data["license"] == "apache-2.0"
    assert "| final_loss | 1.234 |" in card.text
    assert 'PeftModel.from_pretrained(base, "alice/alpha-lora")' in card.text
    assert "6 question/answer pairs and 3 articles" in card.text
    assert f"Crawl run #{lineage_store.crawl_run_id}" in card.text
    assert all(url in card.text for url in ARTICLE_URLS)

    head = local_hub.server.hub.repos["alice/alpha-lora"].branches["main"]
    assert pub.commit_sha == head
    with session_scope() as session:
        row = session.scalars(select(HubPublication)).one()
        assert (row.repo_id, row.commit_sha, row.url) == (
            "alice/alpha-lora", head, f"{local_hub.url}/alice/alpha-lora")

    # The token was really sent, yet appears in no log, no output and no row.
    assert f"Bearer {HUB_TOKEN}" in local_hub.server.hub.auth_headers_seen
    out = capsys.readouterr()
    assert HUB_TOKEN not in caplog.text + out.out + out.err
    assert HUB_TOKEN not in repr(store_state(lineage_store.home))


def test_push_then_pull_round_trip_gives_identical_weights(
    lineage_store: LineageStore, local_hub: LocalHub
) -> None:
    from safetensors.torch import load_file

    pub = push_adapter("alpha", "alice/round-trip", private=True)
    pulled = pull_adapter("alice/round-trip", name="alpha-pulled")

    assert pulled.label == "alpha-pulled:v1" and pulled.base_name == "tiny-chat"
    original = load_file(lineage_store.alpha_path / "adapter_model.safetensors")
    fetched = load_file(Path(pulled.path) / "adapter_model.safetensors")
    assert original.keys() == fetched.keys()
    assert all(original[k].equal(fetched[k]) for k in original)
    assert Path(pulled.path).parent == lineage_store.home / "adapters"
    with session_scope() as session:
        row = session.get(Adapter, pulled.id)
        assert (row.source_repo, row.source_revision) == ("alice/round-trip", pub.commit_sha)
        assert row.method == "lora" and "hub" in row.tags


def test_push_to_a_branch_leaves_main_alone(
    lineage_store: LineageStore, local_hub: LocalHub
) -> None:
    push_adapter("alpha", "alice/branchy")
    pub = push_adapter("beta", "alice/branchy", revision="dev", exist_ok=True)
    assert pub.revision == "dev" and pub.url.endswith("/alice/branchy/tree/dev")
    main = repo_files(local_hub, "alice/branchy")
    dev = repo_files(local_hub, "alice/branchy", "dev")
    beta = (lineage_store.files.adapter_b / "adapter_model.safetensors").read_bytes()
    assert dev["adapter_model.safetensors"] == beta != main["adapter_model.safetensors"]
    pulled = pull_adapter("alice/branchy", revision="dev")
    assert (Path(pulled.path) / "adapter_model.safetensors").read_bytes() == beta


def _upload_raw(hub: LocalHub, repo_id: str, folder: Path) -> None:
    from huggingface_hub import HfApi

    api = HfApi(endpoint=hub.url, token=HUB_TOKEN)
    api.create_repo(repo_id)
    api.upload_folder(repo_id=repo_id, folder_path=folder)


FAILURES = {
    "invalid repo name": (lambda s, h: push_adapter("alpha", "alice/bad name!"), "invalid repo"),
    "repo name without owner": (lambda s, h: pull_adapter("just-a-name"), "OWNER/NAME"),
    "401 bad token": (lambda s, h: (os.environ.__setitem__("HF_TOKEN", "hf_wrong"),
                                    push_adapter("alpha", "alice/x")), "401"),
    "403 other namespace": (lambda s, h: push_adapter("alpha", "bob/x"), "403"),
    "server down": (lambda s, h: push_adapter("alpha", "alice/x", endpoint=h),
                    "cannot reach the Hub"),
    "server down on pull": (lambda s, h: pull_adapter("alice/x", endpoint=h),
                            "cannot reach the Hub"),
    "missing repo": (lambda s, h: pull_adapter("alice/nothing-here"), "not found"),
}


@pytest.mark.parametrize("case", list(FAILURES))
def test_failures_give_one_clear_line_and_leave_the_registry_unchanged(
    case: str, lineage_store: LineageStore, local_hub: LocalHub, dead_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)  # the 401 case changes it; monkeypatch restores
    action, expected = FAILURES[case]
    before = store_state(lineage_store.home)
    with pytest.raises(HubError) as excinfo:
        action(lineage_store, dead_endpoint)
    message = str(excinfo.value)
    assert expected in message and "\n" not in message and HUB_TOKEN not in message
    assert store_state(lineage_store.home) == before


def test_name_conflict_is_refused_unless_exist_ok(
    lineage_store: LineageStore, local_hub: LocalHub
) -> None:
    push_adapter("alpha", "alice/taken")
    before = store_state(lineage_store.home)
    with pytest.raises(HubError, match="already exists.*--exist-ok"):
        push_adapter("beta", "alice/taken")
    assert store_state(lineage_store.home) == before
    push_adapter("beta", "alice/taken", exist_ok=True)
    with session_scope() as session:
        assert len(session.scalars(select(HubPublication)).all()) == 2


def test_pull_refuses_a_pickle_only_repo_without_downloading_it(
    lineage_store: LineageStore, local_hub: LocalHub
) -> None:
    _upload_raw(local_hub, "alice/pickled", lineage_store.files.adapter_pickle)
    before = store_state(lineage_store.home)
    with pytest.raises(HubError, match=r"only pickle weights \(adapter_model.bin\).*safetensors"):
        pull_adapter("alice/pickled")
    assert store_state(lineage_store.home) == before
    assert not [p for m, p in local_hub.server.hub.requests if "/resolve/" in p]


def test_pull_with_an_unknown_base_says_how_to_add_it(
    lineage_store: LineageStore, local_hub: LocalHub, tmp_path: Path
) -> None:
    import json
    import shutil

    folder = tmp_path / "foreign"
    shutil.copytree(lineage_store.files.adapter_a, folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "SomeOrg/unknown-base"
    (folder / "adapter_config.json").write_text(json.dumps(config))
    (folder / "README.md").unlink(missing_ok=True)  # PEFT's card names the local base path
    _upload_raw(local_hub, "alice/foreign", folder)
    before = store_state(lineage_store.home)
    with pytest.raises(HubError, match="loraforge base add NAME SomeOrg/unknown-base"):
        pull_adapter("alice/foreign")
    assert store_state(lineage_store.home) == before
    assert pull_adapter("alice/foreign", base="tiny-chat").base_name == "tiny-chat"


def run_cli(*args: str, home: Path, hub: LocalHub, token: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LORAFORGE_HOME": str(home), "HF_ENDPOINT": hub.url, "HF_TOKEN": token,
           "HF_HUB_DISABLE_XET": "1", "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0"}
    env.pop("LORAFORGE_DATABASE_URL", None)
    return subprocess.run([sys.executable, "-m", "loraforge", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=180)


def test_cli_push_and_pull_through_hf_endpoint_never_print_the_token(
    lineage_store: LineageStore, local_hub: LocalHub
) -> None:
    push = run_cli("hub", "push", "alpha", "--repo", "alice/cli-lora", home=lineage_store.home,
                   hub=local_hub, token=HUB_TOKEN)
    assert push.returncode == 0, push.stderr
    assert f"{local_hub.url}/alice/cli-lora" in push.stdout
    pull = run_cli("hub", "pull", "alice/cli-lora", "--name", "cli-pulled",
                   home=lineage_store.home, hub=local_hub, token=HUB_TOKEN)
    assert pull.returncode == 0, pull.stderr
    assert "cli-pulled:v1" in pull.stdout
    denied = run_cli("hub", "push", "alpha", "--repo", "alice/other", home=lineage_store.home,
                     hub=local_hub, token="hf_not_a_valid_token")
    assert denied.returncode == 1
    assert denied.stderr.strip().count("\n") == 0 and "401" in denied.stderr
    assert "Traceback" not in denied.stderr
    for result in (push, pull, denied):
        assert HUB_TOKEN not in result.stdout + result.stderr
        assert "hf_not_a_valid_token" not in result.stdout + result.stderr


def test_push_with_gguf_uploads_the_exports_beside_the_adapter_and_says_how_to_run_them(
    lineage_store: LineageStore, local_hub: LocalHub
) -> None:
    from huggingface_hub import ModelCard

    from publishing.export import export_gguf

    with pytest.raises(HubError, match=r"alpha:v1 has no GGUF export on disk; run `loraforge "
                                       r"adapters export alpha:v1` first"):
        push_adapter("alpha", "alice/alpha-gguf", gguf=True)
    result = export_gguf("alpha", quantization="q8_0", lora=True)
    push_adapter("alpha", "alice/alpha-gguf", gguf=True)

    files = repo_files(local_hub, "alice/alpha-gguf")
    for exported in result.files:
        assert hashlib.sha256(files[exported.path.name]).hexdigest() == exported.sha256
    assert "adapter_model.safetensors" in files  # the adapter itself still goes first
    card = ModelCard(files["README.md"].decode())
    assert "gguf" in card.data.to_dict()["tags"]
    commands = card.text.splitlines()
    assert "llama-cli -hf alice/alpha-gguf:Q8_0 -cnv" in commands
    assert "ollama run hf.co/alice/alpha-gguf:Q8_0" in commands
    assert "llama-cli -m BASE.gguf --lora alpha-v1-lora.F16.gguf -cnv" in commands

    result.files[0].path.write_bytes(b"changed")  # a file edited after its export is refused
    with pytest.raises(HubError, match="changed since it was exported"):
        push_adapter("alpha", "alice/alpha-gguf", gguf=True, exist_ok=True)


@pytest.mark.parametrize("commit_lands", [False, True])
def test_a_push_killed_mid_upload_records_nothing_and_a_rerun_finishes_it(
    lineage_store: LineageStore, local_hub: LocalHub, commit_lands: bool
) -> None:
    """kill -9 while the Hub holds the commit; the commit is then lost, or lands with no one
    left to record it. Either way no publication row, and the same command again completes."""
    import signal
    import threading
    import time

    hub = local_hub.server.hub
    hub.commit_gate, hub.drop_commits = threading.Event(), not commit_lands
    env = {**os.environ, "LORAFORGE_HOME": str(lineage_store.home), "HF_ENDPOINT": local_hub.url,
           "HF_TOKEN": HUB_TOKEN, "HF_HUB_DISABLE_XET": "1", "HF_HUB_OFFLINE": "0"}
    env.pop("LORAFORGE_DATABASE_URL", None)
    push = ["hub", "push", "alpha", "--repo", "alice/killed-push"]
    before = store_state(lineage_store.home)
    proc = subprocess.Popen([sys.executable, "-m", "loraforge", *push], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert hub.commit_arrived.wait(timeout=120), "the push never reached its commit"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    hub.commit_gate.set()  # the held commit is now refused, or applied
    deadline = time.monotonic() + 30
    while commit_lands and "adapter_model.safetensors" not in repo_files(
            local_hub, "alice/killed-push") and time.monotonic() < deadline:
        time.sleep(0.02)  # the server applies it in its own thread
    assert store_state(lineage_store.home) == before
    assert ("adapter_model.safetensors" in repo_files(local_hub, "alice/killed-push")) \
        == commit_lands

    hub.commit_gate = None
    again = run_cli(*push, home=lineage_store.home, hub=local_hub, token=HUB_TOKEN)
    assert again.returncode == 0, again.stderr
    with session_scope() as session:
        rows = session.scalars(select(HubPublication)).all()
        assert [r.repo_id for r in rows] == ["alice/killed-push"]
    files = repo_files(local_hub, "alice/killed-push")
    assert files["adapter_model.safetensors"] == (
        Path(lineage_store.home) / "adapters" / "alpha-v1" / "adapter_model.safetensors"
    ).read_bytes()

