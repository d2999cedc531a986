"""The OpenAI-compatible API driven by the official ``openai`` client over loopback, and the
vLLM command generated from the registry."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import openai
import pytest

from registry.db import session_scope
from registry.models import Adapter, BaseModel, ModelKind
from serving.engine import BASE_ONLY
from tests.serving.conftest import KEY
from tests.ui.conftest import TinyModelFiles

QUESTION = [{"role": "user", "content": "What is a low-rank adapter?"}]


def test_the_official_client_lists_models_and_gets_the_engines_greedy_replies(api):
    engine, url = api
    client = openai.OpenAI(base_url=url, api_key=KEY)
    assert [m.id for m in client.models.list()] == ["tiny-chat", "alpha:v1", "beta:v1"]

    for model, choice in [("alpha:v1", "alpha:v1"), ("beta:v1", "beta:v1"),
                          ("tiny-chat", BASE_ONLY)]:
        expected = engine.generate(choice, QUESTION, max_new_tokens=12)
        reply = client.chat.completions.create(model=model, messages=QUESTION, max_tokens=12,
                                               temperature=0)
        assert reply.choices[0].message.content == expected and reply.model == model
        assert reply.usage.completion_tokens > 0
        streamed = client.chat.completions.create(model=model, messages=QUESTION, max_tokens=12,
                                                  temperature=0, stream=True)
        chunks = list(streamed)
        text = "".join(c.choices[0].delta.content or "" for c in chunks)
        assert text == expected and chunks[-1].choices[0].finish_reason in ("stop", "length")
    # the adapters really differ, so equal replies above are not one model answering thrice
    assert len({engine.generate(c, QUESTION, max_new_tokens=12)
                for c in ("alpha:v1", "beta:v1", BASE_ONLY)}) == 3

    prompt = "Patients with high blood pressure should"
    completion = client.completions.create(model="alpha:v1", prompt=prompt, max_tokens=8,
                                           temperature=0)
    assert completion.choices[0].text == engine.generate(
        "alpha:v1", [{"role": "user", "content": prompt}], max_new_tokens=8)


def test_bad_requests_get_openai_errors_with_the_right_status(api):
    _, url = api
    client = openai.OpenAI(base_url=url, api_key=KEY)
    with pytest.raises(openai.NotFoundError, match="The model `gamma:v1` does not exist"):
        client.chat.completions.create(model="gamma:v1", messages=QUESTION)
    with pytest.raises(openai.AuthenticationError, match="Incorrect or missing API key"):
        openai.OpenAI(base_url=url, api_key="wrong").models.list()
    for body in [{"model": "alpha:v1", "messages": []},
                 {"model": "alpha:v1", "messages": QUESTION, "max_tokens": 0},
                 {"messages": QUESTION}]:
        answer = httpx.post(f"{url}/chat/completions", json=body,
                            headers={"Authorization": f"Bearer {KEY}"})
        assert answer.status_code == 400, answer.text
        error = answer.json()["error"]
        assert error["type"] == "invalid_request_error" and error["message"]
    broken = httpx.post(f"{url}/chat/completions", content=b"{not json",
                        headers={"Authorization": f"Bearer {KEY}",
                                 "Content-Type": "application/json"})
    assert broken.status_code == 400 and "error" in broken.json()


def _add_adapter(name: str, path: Path, base: str) -> None:
    with session_scope() as session:
        base_id = session.query(BaseModel.id).filter_by(name=base).scalar()
        session.add(Adapter(name=name, version=1, path=str(path), method="lora",
                            base_model_id=base_id))


def test_the_vllm_command_serves_exactly_the_bases_lora_adapters(chat_store: TinyModelFiles,
                                                                 tmp_path: Path):
    from serving.vllm import VllmError, vllm_plan

    with session_scope() as session:
        session.add(BaseModel(name="other", source="test", path=str(chat_store.base)))
        session.add(BaseModel(name="llada", source="test", path=str(chat_store.base),
                              kind=ModelKind.masked_diffusion))
    _add_adapter("elsewhere", chat_store.adapter_a, base="other")
    plan = vllm_plan("tiny-chat", port=8123)
    argv = plan.argv
    assert argv[:3] == ["vllm", "serve", str(chat_store.base)]
    modules = argv[argv.index("--lora-modules") + 1:argv.index("--max-lora-rank")]
    assert modules == [f"alpha:v1={chat_store.adapter_a}", f"beta:v1={chat_store.adapter_b}"]
    assert argv[argv.index("--max-lora-rank") + 1] == "8"  # both adapters have r=8
    assert argv[argv.index("--max-loras") + 1] == "2"
    assert argv[argv.index("--served-model-name") + 1] == "tiny-chat"
    assert ["--port", "8123"] == argv[argv.index("--port"):argv.index("--port") + 2]

    dora = tmp_path / "dora"
    shutil.copytree(chat_store.adapter_a, dora)
    config = json.loads((dora / "adapter_config.json").read_text())
    (dora / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    _add_adapter("dora", dora, base="tiny-chat")
    with pytest.raises(VllmError, match="dora:v1 is a DoRA adapter, which vLLM cannot serve"):
        vllm_plan("tiny-chat")
    with pytest.raises(VllmError, match="'llada' is a masked_diffusion base"):
        vllm_plan("llada")
