"""What an outside review broke, each kept broken-proof: a poisoned request fails alone, the server says which
backend answered, auth runs before the body, slow clients are cut off, generalists back each other up.

Real embedding model and artifact (tests/conftest.py), real uvicorn on loopback, the official openai SDK; the LLM
backends are httpx.MockTransport fakes (tests/fakes.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from prometheus_client import CollectorRegistry

from router.app import create_app
from router.artifact import Artifact
from router.decider import Decider
from router.policy import Policy
from router.settings import Settings, load_settings
from tests.fakes import FakeBackend, fleet_config
from tests.router.test_api import IN_DOMAIN_MATH, OUT_OF_DOMAIN, Stack, running
from tests.server import serve

POISON = "a \udc80 b"
ADMIN_KEY = "sk-admin-0123456789abcdef"
CLIENT_KEY = "sk-client-0123456789abcdef"


@pytest.fixture
def stack(artifact: Artifact, embedder: object, tmp_path: Path) -> Iterator[Stack]:
    with running(artifact, embedder, tmp_path) as s:
        yield s


# ---- one poisoned request -------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions", "/v1/route"])
def test_a_lone_surrogate_fails_its_own_request_and_no_other(stack: Stack, path: str) -> None:
    def body(text: str) -> bytes:
        if path == "/v1/completions":
            payload: dict[str, object] = {"model": "triage", "prompt": text, "max_tokens": 4}
        else:
            payload = {"model": "triage", "messages": [{"role": "user", "content": text}], "max_tokens": 4}
        return json.dumps(payload).encode()  # ensure_ascii: the surrogate travels as the escape \udc80

    good = [f"{IN_DOMAIN_MATH} ({i})" for i in range(40)]
    with httpx.Client(base_url=stack.base_url, timeout=60) as client, ThreadPoolExecutor(16) as pool:
        def send(text: str) -> httpx.Response:
            return client.post(path, content=body(text), headers={"content-type": "application/json"})

        futures = [pool.submit(send, text) for text in good[:20]]
        poisoned = pool.submit(send, POISON)
        futures += [pool.submit(send, text) for text in good[20:]]
        responses = [f.result() for f in futures]
        bad = poisoned.result()
    assert [r.status_code for r in responses] == [200] * 40
    assert bad.status_code == 400
    error = bad.json()["error"]
    assert error["type"] == "invalid_request_error" and "surrogate" in error["message"]
    assert bad.headers["x-request-id"]


def test_a_batch_whose_model_call_fails_is_decided_one_by_one(artifact: Artifact, embedder: object) -> None:
    class Picky:
        """The real encoder, except that it cannot read one text (as a tokenizer fails on a lone surrogate)."""

        def __getattr__(self, attribute: str) -> object:
            return getattr(embedder, attribute)

        def encode(self, texts: list[str]) -> np.ndarray:
            if any("poison" in t for t in texts):
                raise TypeError("the tokenizer cannot read this")
            return embedder.encode(texts)  # type: ignore[attr-defined, no-any-return]

    async def run() -> list[object]:
        decider = Decider(Picky())  # type: ignore[arg-type]
        await decider.start()
        try:
            policy = Policy(artifact)
            jobs = [decider.decide(text, policy, 0.5) for text in ("one", "poison", "two", "three")]
            return await asyncio.gather(*jobs, return_exceptions=True)
        finally:
            await decider.stop()

    outcomes = asyncio.run(run())
    assert isinstance(outcomes[1], TypeError)
    assert all(not isinstance(o, BaseException) for i, o in enumerate(outcomes) if i != 1)


# ---- what the server says ---------------------------------------------------------------------------------------
def test_the_model_field_names_the_backend_that_answered(stack: Stack) -> None:
    client = stack.client()
    raw = client.chat.completions.with_raw_response.create(
        model="triage", messages=[{"role": "user", "content": IN_DOMAIN_MATH}])
    assert raw.parse().model == raw.headers["x-triage-backend"]
    with client.chat.completions.with_streaming_response.create(
            model="triage", stream=True, messages=[{"role": "user", "content": OUT_OF_DOMAIN}]) as response:
        backend = response.headers["x-triage-backend"]
        models = {chunk.model for chunk in response.parse()}
    assert models == {backend}
    pinned = stack.artifact.models[0]
    assert client.completions.create(model=pinned, prompt="hi").model == pinned


def test_models_can_be_retrieved_one_by_one_and_name_the_generalist(stack: Stack) -> None:
    client = stack.client()
    assert client.models.retrieve("triage").id == "triage"
    for name in stack.artifact.models:  # names with a slash, as the data sets' model names have
        assert client.models.retrieve(name).id == name
    roles = {m.id: getattr(m, "role", None) for m in client.models.list().data}
    assert roles[stack.artifact.generalist] == "generalist"
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("gpt-17")
    assert info.value.response.json()["error"]["code"] == "model_not_found"


@pytest.mark.parametrize("request_body", [
    b"{not json", json.dumps({"model": "gpt-17", "messages": [{"role": "user", "content": "x"}]}).encode()])
def test_every_error_carries_a_request_id(stack: Stack, request_body: bytes) -> None:
    response = httpx.post(stack.base_url + "/v1/chat/completions", content=request_body,
                          headers={"content-type": "application/json"})
    assert response.status_code in (400, 404)
    assert len(response.headers["x-request-id"]) == 32
    assert httpx.get(stack.base_url + "/nowhere").headers["x-request-id"]


def test_token_id_prompts_take_the_default_route(stack: Stack) -> None:
    raw = stack.client().completions.with_raw_response.create(model="triage", prompt=[1, 2, 3], max_tokens=4)
    assert raw.headers["x-triage-reason"] == "no_text"
    assert raw.headers["x-triage-backend"] == stack.artifact.generalist
    assert stack.fakes[stack.artifact.generalist].seen[-1]["prompt"] == [1, 2, 3]
    bad = httpx.post(stack.base_url + "/v1/completions", json={"model": "triage", "prompt": [[]]})
    assert bad.status_code == 400


def test_unknown_feedback_id_is_not_found_not_model_not_found(stack: Stack) -> None:
    response = httpx.post(stack.base_url + "/v1/feedback", json={"request_id": "nope", "score": 1})
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_a_backend_429_with_nothing_left_is_passed_on_with_retry_after(stack: Stack) -> None:
    pinned = stack.artifact.models[0]
    stack.fakes[pinned].fault = "429"
    response = httpx.post(stack.base_url + "/v1/chat/completions", json={
        "model": pinned, "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert response.json()["error"]["type"] == "rate_limit_error"


def test_a_decision_that_avoided_a_down_backend_says_so(stack: Stack) -> None:
    messages = [{"role": "user", "content": IN_DOMAIN_MATH}]
    first = httpx.post(stack.base_url + "/v1/route", json={"model": "triage:quality", "messages": messages}).json()
    chosen = first["backend"]
    stack.fakes[chosen].fault = "connect"
    stack.client().chat.completions.create(model="triage:quality", messages=messages)  # fails over, marks it down
    raw = stack.client().chat.completions.with_raw_response.create(model="triage:quality", messages=messages)
    assert raw.headers["x-triage-backend"] != chosen
    assert raw.headers["x-triage-reason"] == "backend_down"
    assert stack.metric("triage_fallbacks_total", {"reason": "backend_down"}) >= 1
    assert stack.metric("triage_fallbacks_total", {"reason": "fallback_after_error"}) == 1


# ---- generalists back each other up -------------------------------------------------------------------------------
def two_generalists(artifact: Artifact, tmp_path: Path) -> Settings:
    settings = fleet_config(artifact, tmp_path)
    config = json.loads((tmp_path / "triage.yaml").read_text())
    config["backends"].append({"name": "backup-generalist", "base_url": "http://99.backend.test/v1",
                               "model": "served-99", "role": "generalist"})
    config["generalists"] = [settings.generalist_name, "backup-generalist"]
    config["health"] = {"probe_interval_s": 0, "failure_threshold": 1, "open_seconds": 30}
    (tmp_path / "triage.yaml").write_text(json.dumps(config))
    return load_settings(tmp_path / "triage.yaml", environ={})


def test_out_of_domain_queries_go_to_the_next_generalist_and_never_to_a_specialist(
        artifact: Artifact, embedder: object, tmp_path: Path) -> None:
    settings = two_generalists(artifact, tmp_path)
    fakes = {b.name: FakeBackend(b.model, reply=f"answer from {b.name}") for b in settings.backends}
    app = create_app(settings, registry=CollectorRegistry(), encoder=embedder,  # type: ignore[arg-type]
                     transport_for=lambda b: fakes[b.name].transport())
    with serve(app) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        fakes[artifact.generalist].fault = "connect"
        raw = client.chat.completions.with_raw_response.create(
            model="triage", messages=[{"role": "user", "content": OUT_OF_DOMAIN}])
        assert raw.headers["x-triage-backend"] == "backup-generalist"
        fakes["backup-generalist"].fault = "connect"
        with pytest.raises(openai.APIStatusError):
            client.chat.completions.create(model="triage", messages=[{"role": "user", "content": OUT_OF_DOMAIN}])
        response = httpx.post(url + "/v1/chat/completions", json={
            "model": "triage", "messages": [{"role": "user", "content": OUT_OF_DOMAIN}]})
        assert response.status_code == 503
        assert int(response.headers["retry-after"]) >= 1
        assert "no backend" in response.json()["error"]["message"]
        specialists = [m for m in artifact.models if m != artifact.generalist]
        assert all(not fakes[m].seen for m in specialists)
        assert httpx.get(url + "/ready").status_code == 503


# ---- auth before the body, and a limiter for guessing ---------------------------------------------------------------
def auth_config() -> dict[str, object]:
    return {"enabled": True, "failed_per_minute": 5, "keys": [
        {"name": "client", "key": CLIENT_KEY}, {"name": "root", "key": ADMIN_KEY, "admin": True}]}


def test_auth_runs_before_the_body_and_guessing_is_slowed(artifact: Artifact, embedder: object,
                                                           tmp_path: Path) -> None:
    with running(artifact, embedder, tmp_path, auth=auth_config(),
                 server={"metrics": "admin", "docs": "off"}) as s:
        url = s.base_url
        # Not JSON at all, and no key: the answer is about the key, so the body was never parsed.
        response = httpx.post(url + "/v1/chat/completions", content=b"{not json",
                              headers={"content-type": "application/json"})
        assert response.status_code == 401 and response.headers["x-request-id"]
        assert httpx.get(url + "/metrics").status_code == 401
        client_headers = {"authorization": f"Bearer {CLIENT_KEY}"}
        assert httpx.get(url + "/metrics", headers=client_headers).status_code == 403
        metrics = httpx.get(url + "/metrics", headers={"authorization": f"Bearer {ADMIN_KEY}"})
        assert metrics.status_code == 200 and "triage_requests_total" in metrics.text
        assert httpx.get(url + "/docs").status_code == 404
        assert httpx.get(url + "/openapi.json", headers={"authorization": f"Bearer {ADMIN_KEY}"}).status_code == 404
        assert httpx.post(url + "/admin/reload", headers=client_headers).status_code == 403
        ok = openai.OpenAI(base_url=url + "/v1", api_key=CLIENT_KEY, max_retries=0)
        assert ok.chat.completions.create(model="triage", messages=[{"role": "user", "content": "hi"}]).choices
        for _ in range(4):  # 1 failure above (+ /metrics): up to the limit of 5 a minute
            httpx.get(url + "/v1/models", headers={"authorization": "Bearer wrong"})
        guessed = httpx.get(url + "/v1/models", headers={"authorization": f"Bearer {CLIENT_KEY}"})
        assert guessed.status_code == 429 and int(guessed.headers["retry-after"]) >= 1
        assert httpx.get(url + "/health").status_code == 200


def test_keys_come_from_the_environment_and_only_their_digest_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(json.dumps({"artifact": "a", "auth": {"enabled": True}, "backends": [
        {"name": "g", "base_url": "http://g/v1", "model": "g", "role": "generalist"}]}))
    keys = json.dumps([{"name": "ci", "key": CLIENT_KEY}])
    settings = load_settings(path, environ={"TRIAGE_AUTH__KEYS": keys})
    assert settings.auth.keys[0].sha256 == hashlib.sha256(CLIENT_KEY.encode()).hexdigest()
    assert CLIENT_KEY not in settings.model_dump_json()


def test_serve_refuses_an_open_host_without_auth(tmp_path: Path, artifact: Artifact,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from router.cli import main

    settings = fleet_config(artifact, tmp_path, server={"host": "0.0.0.0"})
    assert settings.exposure_problem() is not None
    assert main(["serve", "--config", str(tmp_path / "triage.yaml")]) == 2
    assert "refusing to start" in capsys.readouterr().err
    assert fleet_config(artifact, tmp_path).exposure_problem() is None  # loopback
    assert fleet_config(artifact, tmp_path, server={"host": "0.0.0.0"},
                        auth=auth_config()).exposure_problem() is None


def test_the_shipped_deploy_config_has_auth_on() -> None:
    import yaml

    config = yaml.safe_load((Path(__file__).parents[2] / "deploy" / "router.config.yaml").read_text())
    assert config["auth"]["enabled"] is True and not config["auth"].get("allow_unauthenticated")
    assert config["server"]["docs"] in ("admin", "off")


# ---- slow clients ---------------------------------------------------------------------------------------------------
def test_connections_without_a_complete_request_head_are_closed(tmp_path: Path) -> None:
    import uvicorn
    from fastapi import FastAPI

    from router.server import config
    from router.settings import ServerSettings

    app = FastAPI()

    @app.get("/ping")
    async def ping() -> dict[str, str]:
        return {"pong": "yes"}

    settings = ServerSettings(port=free_port(), head_timeout_s=0.5, max_connections=30)
    server = uvicorn.Server(config(app, settings, log_level="warning"))
    import threading

    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        idle = [socket.create_connection(("127.0.0.1", settings.port), timeout=5) for _ in range(10)]
        slow = socket.create_connection(("127.0.0.1", settings.port), timeout=5)
        for byte in b"GET /ping HTTP/1.1\r\nHost: x\r\n":  # a byte at a time, never finishing the head
            slow.send(bytes([byte]))
            time.sleep(0.02)
            if byte == ord("\n"):
                break
        time.sleep(1.5)
        for conn in [*idle, slow]:
            assert closed(conn), "a connection without a complete head is still open"
            conn.close()
        # Beyond max_connections new ones are refused at once; the server still answers.
        crowd = [socket.create_connection(("127.0.0.1", settings.port), timeout=5) for _ in range(40)]
        time.sleep(0.2)
        refused = sum(closed(c, wait=0.2) for c in crowd)
        assert refused >= 40 - 30
        for c in crowd:
            c.close()
        time.sleep(0.2)
        assert httpx.get(f"http://127.0.0.1:{settings.port}/ping").json() == {"pong": "yes"}
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def closed(conn: socket.socket, wait: float = 2.0) -> bool:
    conn.settimeout(wait)
    try:
        return conn.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
