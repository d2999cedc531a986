"""Publish adapters to a Hugging Face Hub (or a self-hosted one) and fetch them back.

The token is whatever huggingface_hub resolves (``HF_TOKEN``, then a stored login). We pass
it to the client and nowhere else: it is not stored, logged or put in an error message.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import LoraForgeError
from core.settings import get_settings
from publishing.model_card import CardOptions, build_model_card
from registry.adapter_files import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    PICKLE_SUFFIXES,
    AdapterFileError,
    check_adapter_dir,
)
from registry.adapter_ops import show_adapter
from registry.adapters import get_adapter, next_version
from registry.bases import BaseRecord, list_bases
from registry.db import session_scope
from registry.exports import ExportRecord, exports_for
from registry.files import sha256_of
from registry.lineage import adapter_lineage
from registry.models import Adapter, HubPublication

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")


class HubError(LoraForgeError):
    """A push or pull failed; the message says why and what to do."""


@dataclass(frozen=True)
class Publication:
    adapter_label: str
    repo_id: str
    revision: str
    commit_sha: str
    url: str
    private: bool


@dataclass(frozen=True)
class PulledAdapter:
    id: int
    label: str
    path: str
    base_name: str
    repo_id: str
    revision: str


def resolve_endpoint(endpoint: str | None = None) -> str:
    from huggingface_hub import constants

    # HF_ENDPOINT is read at call time, not at import, so a changed environment takes effect.
    return (endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def check_repo_id(repo_id: str) -> str:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        ok = False
    else:
        ok = bool(REPO_ID.match(repo_id)) and ".." not in repo_id and "--" not in repo_id
    if not ok:
        raise HubError(f"invalid repo name {repo_id!r}: use OWNER/NAME with letters, digits, "
                       "'-', '_' or '.' (e.g. alice/medical-lora)")
    return repo_id


@contextmanager
def hub_errors(endpoint: str, repo_id: str, action: str) -> Iterator[None]:
    """Turn client exceptions into one HubError line that never carries the token."""
    import httpx2
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
    )

    try:
        yield
    except OfflineModeIsEnabled as exc:
        raise HubError(f"cannot {action}: HF_HUB_OFFLINE is set; unset it to reach "
                       f"{endpoint}") from exc
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        said = (exc.server_message or "").strip().splitlines()
        detail = f" ({said[0]})" if said else ""
        if status == 401:
            message = (f"{endpoint} rejected the token (401){detail}; set a valid HF_TOKEN or "
                       "run `hf auth login`")
        elif status == 403:
            message = (f"the token may not {action} {repo_id} (403){detail}; use a token with "
                       "write access to that namespace, or another --repo")
        elif status == 404:
            message = f"{repo_id} was not found on {endpoint} (404){detail}; check the name"
        elif status == 409:
            message = (f"{repo_id} already exists on {endpoint} (409); pass --exist-ok to push "
                       "a new commit to it, or choose another --repo")
        else:
            message = f"the Hub at {endpoint} answered {status}{detail} while trying to {action}"
        raise HubError(message) from exc
    except (httpx2.TransportError, LocalEntryNotFoundError) as exc:
        # hf_hub_download reports an unreachable server as a file missing from the local cache.
        raise HubError(f"cannot reach the Hub at {endpoint} ({type(exc).__name__}); check "
                       "--endpoint / HF_ENDPOINT and that the server is up") from exc


def _token() -> str | None:
    from huggingface_hub import get_token

    return get_token()


def _stage_upload(adapter_dir: Path, card_text: str, staging: Path,
                  extra_files: list[Path] = ()) -> None:
    for item in [*adapter_dir.iterdir(), *extra_files]:
        if item.is_file() and not item.name.startswith(".") and item.name != "README.md" \
                and not item.name.endswith(PICKLE_SUFFIXES):
            try:  # GGUF files are big; a link costs nothing where the filesystem allows it
                os.link(item, staging / item.name)
            except OSError:
                shutil.copy2(item, staging / item.name)
    (staging / "README.md").write_text(card_text)


def gguf_files_to_push(adapter_id: int, label: str) -> list[ExportRecord]:
    """The adapter's GGUF exports still on disk and unchanged since they were recorded (the
    newest per file name), or a one-line refusal that says how to make them."""
    newest: dict[str, ExportRecord] = {}
    for export in exports_for(adapter_id):
        if export.format == "gguf" and export.on_disk:
            newest[Path(export.path).name] = export
    if not newest:
        raise HubError(f"{label} has no GGUF export on disk; run `loraforge adapters export "
                       f"{label}` first, or push without --gguf")
    for export in newest.values():
        if sha256_of(Path(export.path)) != export.sha256:
            raise HubError(f"{export.path} changed since it was exported (SHA-256 differs); "
                           f"run `loraforge adapters export {label}` again")
    return list(newest.values())


def push_adapter(
    label_or_id: str | int,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    endpoint: str | None = None,
    exist_ok: bool = False,
    card: CardOptions | None = None,
    gguf: bool = False,
) -> Publication:
    """Create the repo, upload the adapter with a generated model card, record the publication.

    With ``gguf``, the adapter's GGUF exports go beside it and the card says how to run them.
    """
    from huggingface_hub import HfApi

    check_repo_id(repo_id)
    endpoint = resolve_endpoint(endpoint)
    detail = show_adapter(label_or_id)
    ggufs = gguf_files_to_push(detail.id, detail.label) if gguf else []
    card_text = str(build_model_card(detail, adapter_lineage(detail.id), repo_id,
                                      card or CardOptions(), gguf=ggufs))
    try:  # before the token: a broken adapter is worth knowing about without logging in
        check_adapter_dir(Path(detail.path), f"adapter {detail.label}")
    except AdapterFileError as exc:
        raise HubError(f"{exc}; only intact PEFT adapters saved with safetensors are "
                       "pushed") from exc
    token = _token()
    if token is None:
        raise HubError("no Hugging Face token found; set HF_TOKEN or run `hf auth login`")
    api = HfApi(endpoint=endpoint, token=token)
    branch = revision or "main"
    with tempfile.TemporaryDirectory(prefix="loraforge-push-") as tmp:
        _stage_upload(Path(detail.path), card_text, Path(tmp), [Path(g.path) for g in ggufs])
        with hub_errors(endpoint, repo_id, "push to"):
            # A push killed after creating the repo left it empty, or holding these very
            # weights without a publication row: pushing again finishes that push.
            exist_ok = exist_ok or _unfinished_push(api, repo_id, branch,
                                                    Path(detail.path) / ADAPTER_WEIGHTS)
            repo_url = api.create_repo(repo_id, private=private, exist_ok=exist_ok)
            if branch != "main":
                api.create_branch(repo_id, branch=branch, exist_ok=True)
            commit = api.upload_folder(
                repo_id=repo_id, folder_path=tmp, revision=branch,
                commit_message=f"Upload {detail.label} with LoRAForge",
            )
    url = str(repo_url) if branch == "main" else f"{repo_url}/tree/{branch}"
    with session_scope() as session:
        session.add(HubPublication(adapter_id=detail.id, repo_id=repo_id, revision=branch,
                                   commit_sha=commit.oid, url=url, private=private))
    return Publication(detail.label, repo_id, branch, commit.oid, url, private)


def _unfinished_push(api: Any, repo_id: str, branch: str, weights: Path) -> bool:
    """Whether ``repo_id`` exists and is this adapter's own unfinished push: nothing in it but
    .gitattributes, or our adapter weights, byte for byte (compared by hash, not downloaded)."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.utils import EntryNotFoundError, RevisionNotFoundError

    if not api.repo_exists(repo_id):
        return False
    try:
        files = {s.rfilename for s in api.model_info(repo_id, revision=branch).siblings or []}
    except RevisionNotFoundError:
        files = set()
    if not files - {".gitattributes"}:
        return True
    if ADAPTER_WEIGHTS not in files:
        return False
    try:
        meta = get_hf_file_metadata(hf_hub_url(repo_id, ADAPTER_WEIGHTS, revision=branch,
                                               endpoint=api.endpoint), token=api.token)
    except EntryNotFoundError:
        return False
    etag = (meta.etag or "").strip('"')
    if len(etag) == 64:  # an LFS file: its sha256
        return etag == sha256_of(weights)
    data = weights.read_bytes()  # a small file kept in git: its blob id
    return etag == hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _refuse_unsafe(repo_id: str, files: set[str]) -> None:
    if ADAPTER_CONFIG not in files:
        raise HubError(f"{repo_id} is not a PEFT adapter: it has no {ADAPTER_CONFIG}")
    if ADAPTER_WEIGHTS not in files:
        pickles = sorted(f for f in files if f.endswith(PICKLE_SUFFIXES))
        if pickles:
            raise HubError(
                f"{repo_id} has only pickle weights ({', '.join(pickles)}); loading a pickle can "
                "run arbitrary code, so only safetensors are accepted. Ask the author to re-save "
                "with save_pretrained(..., safe_serialization=True)")
        raise HubError(f"{repo_id} has no {ADAPTER_WEIGHTS}")


def _validate_download(repo_id: str, folder: Path) -> dict:
    try:
        return check_adapter_dir(folder, repo_id)
    except AdapterFileError as exc:
        raise HubError(str(exc)) from exc


def _card_base_model(folder: Path) -> str | None:
    from huggingface_hub import ModelCard

    readme = folder / "README.md"
    if not readme.is_file():
        return None
    base = ModelCard.load(readme).data.to_dict().get("base_model")
    return base[0] if isinstance(base, list) and base else base


def match_base(candidates: list[str], base: str | None = None) -> BaseRecord:
    """The registered base an adapter was trained on, by name, Hub id or local path."""
    bases = list_bases()
    if base is not None:
        found = [b for b in bases if b.name == base]
        if not found:
            raise HubError(f"no base model {base!r} in the registry; see `loraforge base list`")
        return found[0]
    for candidate in filter(None, candidates):
        for b in bases:
            if candidate in (b.name, b.source, b.path) or Path(candidate).name == b.name:
                return b
    wanted = next(filter(None, candidates), "(unknown)")
    raise HubError(f"base model {wanted!r} is not in the registry; add it with `loraforge base "
                   f"add NAME {wanted}`, or pass --base NAME to use a registered base")


def pull_adapter(
    repo_id: str,
    *,
    revision: str | None = None,
    endpoint: str | None = None,
    name: str | None = None,
    base: str | None = None,
) -> PulledAdapter:
    """Download a PEFT adapter, check it is safe and loadable, and register it."""
    from huggingface_hub import HfApi, hf_hub_download

    check_repo_id(repo_id)
    endpoint = resolve_endpoint(endpoint)
    token = _token()
    api = HfApi(endpoint=endpoint, token=token)
    with hub_errors(endpoint, repo_id, "pull"):
        info = api.model_info(repo_id, revision=revision)
    files = {s.rfilename for s in info.siblings or []}
    _refuse_unsafe(repo_id, files)
    adapters_dir = get_settings().adapters_dir
    adapters_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".pull-", dir=adapters_dir))
    try:
        with hub_errors(endpoint, repo_id, "pull"):
            for filename in sorted({ADAPTER_CONFIG, ADAPTER_WEIGHTS, "README.md"} & files):
                hf_hub_download(repo_id, filename, revision=info.sha, endpoint=endpoint,
                                token=token, local_dir=staging)
        shutil.rmtree(staging / ".cache", ignore_errors=True)
        config = _validate_download(repo_id, staging)
        base_record = match_base([config.get("base_model_name_or_path"),
                                  _card_base_model(staging)], base)
        return _register_pulled(staging, config, repo_id, info.sha, name, base_record)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _register_pulled(staging: Path, config: dict, repo_id: str, sha: str, name: str | None,
                     base: BaseRecord) -> PulledAdapter:
    name = name or repo_id.split("/", 1)[1]
    version = next_version(name)
    final_dir = get_settings().adapters_dir / f"{name}-v{version}"
    if final_dir.exists():  # files whose row was deleted; the store is the truth
        shutil.rmtree(final_dir)
    staging.rename(final_dir)
    try:
        with session_scope() as session:
            row = Adapter(
                name=name, version=version, path=str(final_dir),
                method=str(config.get("peft_type", "lora")).lower(), base_model_id=base.id,
                tags=["hub"], source_repo=repo_id, source_revision=sha,
            )
            session.add(row)
            session.flush()
            adapter_id = row.id
    except BaseException:
        shutil.rmtree(final_dir, ignore_errors=True)
        raise
    record = get_adapter(adapter_id)
    return PulledAdapter(record.id, record.label, record.path, base.name, repo_id, sha)
