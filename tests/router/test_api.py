"""The router through the official openai SDK, over real HTTP (uvicorn on loopback), with fake backends.

The embedding model and the artifact are real (tests/conftest.py); only the LLM backends are
httpx.MockTransport fakes, so every routing decision here is the one production would make.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client import CollectorRegistry

from router.app import create_app
from router.artifact import Artifact
from router.embedding.torch import Embedder
from router.settings import Settings
from tests.fakes import FakeBackend, fleet_config
from tests.server import serve

IN_DOMAIN_MATH = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?"
)
OUT_OF_DOMAIN = "My order #4412 arrived damaged, how do I get a refund?"


@dataclass
class Stack:
    base_url: str
    settings: Settings
    fakes: dict[str, FakeBackend]
    registry: CollectorRegistry
    artifact: Artifact

    def client(self, **kw: object) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url + "/v1", api_key="unused", max_retries=0, **kw)  # type: ignore[arg-type]

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        return self.registry.get_sample_value(name, labels or {}) or 0.0


@contextmanager
def running(artifact: Artifact, embedder: object, tmp_path: Path, **extra: object) -> Iterator[Stack]:
    """The router on ``artifact`` over real HTTP, each backend a fake that names itself in its answer; ``extra``
    config sections replace the defaults."""
    settings = fleet_config(artifact, tmp_path, **{"limits": {"max_body_bytes": 20_000}, **extra})
    fakes = {b.name: FakeBackend(b.model, reply=f"answer from {b.name}") for b in settings.backends}
    registry = CollectorRegistry()
    app = create_app(settings, registry=registry, encoder=embedder,  # type: ignore[arg-type]
                     transport_for=lambda b: fakes[b.name].transport())
    with serve(app) as base_url:
        yield Stack(base_url, settings, fakes, registry, artifact)


@pytest.fixture
def stack(artifact: Artifact, embedder: Embedder, tmp_path: Path) -> Iterator[Stack]:
    with running(artifact, embedder, tmp_path) as s:
        yield s


def test_chat_completion_routes_and_explains_itself(stack: Stack) -> None:
    raw = stack.client().chat.completions.with_raw_response.create(
        model="triage", messages=[{"role": "user", "content": IN_DOMAIN_MATH}],
        temperature=0.1, max_tokens=32, stop=["\n\n"], n=1, seed=7, logprobs=False,
        response_format={"type": "text"},
        tools=[{"type": "function", "function": {"name": "calc", "parameters": {"type": "object"}}}],
    )
    completion = raw.parse()
    backend = raw.headers["x-triage-backend"]
    assert completion.choices[0].message.content == f"answer from {backend}"
    assert raw.headers["x-triage-reason"] in {"best", "cliff"}
    assert raw.headers["x-triage-knob"] == "0.5"
    assert 0 <= int(raw.headers["x-triage-cluster"]) < stack.artifact.k
    assert float(raw.headers["x-triage-ood-score"]) >= 0
    assert len(raw.headers["x-request-id"]) == 32
    forwarded = stack.fakes[backend].seen[-1]
    assert forwarded["model"] == stack.settings.backend(backend).model  # the backend's own id
    for field, value in {"temperature": 0.1, "max_tokens": 32, "stop": ["\n\n"], "seed": 7, "n": 1,
                         "logprobs": False, "response_format": {"type": "text"}}.items():
        assert forwarded[field] == value
    assert forwarded["tools"][0]["function"]["name"] == "calc"
    assert "triage" not in forwarded
    assert stack.metric("triage_tokens_total", {"backend": backend, "kind": "prompt"}) == 11
    assert stack.metric("triage_cost_usd_total", {"backend": backend}) == pytest.approx(
        (11 + 3) * 0.2 / 1e6)


def test_knob_from_model_suffix_and_from_extra_body(stack: Stack) -> None:
    client = stack.client()
    messages = [{"role": "user", "content": IN_DOMAIN_MATH}]
    for model, knob in [("triage:quality", "1"), ("triage:cost", "0"), ("triage:balanced", "0.5"),
                        ("triage:0.25", "0.25")]:
        raw = client.chat.completions.with_raw_response.create(model=model, messages=messages)
        assert raw.headers["x-triage-knob"] == knob
    raw = client.chat.completions.with_raw_response.create(
        model="triage", messages=messages, extra_body={"triage": {"knob": 0.7}})
    assert raw.headers["x-triage-knob"] == "0.7"


def test_streaming_with_usage_passes_chunks_through(stack: Stack) -> None:
    chunks = list(stack.client().chat.completions.create(
        model="triage:quality", messages=[{"role": "user", "content": IN_DOMAIN_MATH}], stream=True,
        stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("answer from ")
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 11


def test_streaming_without_usage_still_accounts_cost(stack: Stack) -> None:
    with stack.client().chat.completions.with_streaming_response.create(
        model="triage", messages=[{"role": "user", "content": IN_DOMAIN_MATH}], stream=True
    ) as response:
        backend = response.headers["x-triage-backend"]
        chunks = list(response.parse())
    assert all(c.usage is None for c in chunks)
    assert stack.fakes[backend].seen[-1]["stream_options"] == {"include_usage": True}
    assert stack.metric("triage_tokens_total", {"backend": backend, "kind": "completion"}) == 3


def test_legacy_completions(stack: Stack) -> None:
    raw = stack.client().completions.with_raw_response.create(model="triage", prompt=IN_DOMAIN_MATH, max_tokens=8)
    assert raw.parse().choices[0].text.startswith("answer from ")
    assert stack.fakes[raw.headers["x-triage-backend"]].seen[-1]["prompt"] == IN_DOMAIN_MATH


def test_models_lists_virtual_models_and_every_backend(stack: Stack) -> None:
    ids = {m.id for m in stack.client().models.list()}
    assert {"triage", "triage:quality", "triage:balanced", "triage:cost"} <= ids
    assert set(stack.artifact.models) <= ids


def test_pinning_a_backend_skips_routing(stack: Stack) -> None:
    name = stack.artifact.models[0]
    raw = stack.client().chat.completions.with_raw_response.create(
        model=name, messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-triage-backend"] == name
    assert raw.headers["x-triage-reason"] == "pinned"
    assert len(stack.fakes[name].seen) == 1


def test_out_of_domain_goes_to_the_generalist(stack: Stack) -> None:
    raw = stack.client().chat.completions.with_raw_response.create(
        model="triage:quality", messages=[{"role": "user", "content": OUT_OF_DOMAIN}])
    assert raw.headers["x-triage-reason"] == "ood_fallback"
    assert raw.headers["x-triage-backend"] == stack.artifact.generalist
    assert stack.metric("triage_fallbacks_total", {"reason": "ood_fallback"}) == 1


def test_route_returns_the_decision_without_generating(stack: Stack) -> None:
    response = httpx.post(stack.base_url + "/v1/route", json={
        "model": "triage:quality", "messages": [{"role": "user", "content": IN_DOMAIN_MATH}]})
    assert response.status_code == 200
    decision = response.json()
    assert decision["backend"] == response.headers["x-triage-backend"]
    candidates = decision["decision"]["candidates"]
    assert {c["model"] for c in candidates} == set(stack.artifact.models)
    assert all(0 <= c["expected_accuracy"] <= 1 for c in candidates)
    assert all(not fake.seen for fake in stack.fakes.values())
    prompt = httpx.post(stack.base_url + "/v1/route", json={"model": "triage", "prompt": IN_DOMAIN_MATH})
    assert prompt.status_code == 200 and prompt.json()["cluster"] == decision["cluster"]


def test_a_failing_backend_falls_back_to_the_next_eligible(stack: Stack) -> None:
    messages = [{"role": "user", "content": IN_DOMAIN_MATH}]
    first = httpx.post(stack.base_url + "/v1/route", json={"model": "triage:quality", "messages": messages})
    chosen = first.json()["backend"]
    stack.fakes[chosen].fault = "500"
    raw = stack.client().chat.completions.with_raw_response.create(model="triage:quality", messages=messages)
    assert raw.headers["x-triage-reason"] == "fallback_after_error"
    assert raw.headers["x-triage-backend"] != chosen
    assert raw.headers["x-triage-backend"] == first.json()["fallback_chain"][1]
    assert stack.metric("triage_fallbacks_total", {"reason": "fallback_after_error"}) == 1


def test_every_backend_down_is_a_clear_502(stack: Stack) -> None:
    for fake in stack.fakes.values():
        fake.fault = "connect"
    with pytest.raises(openai.APIStatusError) as info:
        stack.client().chat.completions.create(model="triage", messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 502
    body = info.value.response.json()["error"]
    assert body["code"] == "backend_error" and "backend.test" not in body["message"]


def test_backend_failure_mid_stream_ends_with_an_sse_error(stack: Stack) -> None:
    for fake in stack.fakes.values():
        fake.fault = "reset_mid_stream"
    with httpx.stream("POST", stack.base_url + "/v1/chat/completions", json={
        "model": "triage", "stream": True, "messages": [{"role": "user", "content": "hi"}]}) as response:
        body = response.read().decode()
    assert response.status_code == 200
    events = [e for e in body.split("\n\n") if e]
    assert '"content"' in events[0]
    assert json.loads(events[-2].removeprefix("data: "))["error"]["code"] == "backend_error"
    assert events[-1] == "data: [DONE]"


def test_a_backend_4xx_reaches_the_client_in_openai_shape(stack: Stack) -> None:
    for fake in stack.fakes.values():
        fake.fault = "400"
    with pytest.raises(openai.BadRequestError) as info:
        stack.client().chat.completions.create(model="triage", messages=[{"role": "user", "content": "hi"}],
                                               max_tokens=10**6)
    assert info.value.response.json()["error"]["param"] == "max_tokens"


BAD_REQUESTS = [
    (b"{not json", 400, None),
    (json.dumps({"model": "triage"}).encode(), 400, "messages"),
    (json.dumps({"model": "triage", "messages": []}).encode(), 400, "messages"),
    (json.dumps({"model": "triage", "messages": "hello"}).encode(), 400, "messages"),
    (json.dumps({"model": "triage", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}).encode(),
     400, "temperature"),
    (json.dumps({"model": "triage:1.5", "messages": [{"role": "user", "content": "x"}]}).encode(), 400, "model"),
    (json.dumps({"model": "triage", "triage": {"knob": -1}, "messages": [{"role": "user", "content": "x"}]}).encode(),
     400, "triage.knob"),
    (json.dumps({"model": "gpt-17", "messages": [{"role": "user", "content": "x"}]}).encode(), 404, "model"),
    (json.dumps({"model": "triage", "messages": [{"role": "user", "content": "x" * 30_000}]}).encode(), 413, None),
]


@pytest.mark.parametrize(("body", "status", "param"), BAD_REQUESTS)
def test_bad_input_gets_an_openai_shaped_4xx_and_the_service_keeps_serving(
    stack: Stack, body: bytes, status: int, param: str | None
) -> None:
    response = httpx.post(stack.base_url + "/v1/chat/completions", content=body,
                          headers={"content-type": "application/json"})
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"] and "Traceback" not in error["message"] and "/" not in error["message"].replace(
        "/v1/models", "")
    if param:
        assert error["param"] == param
    assert httpx.get(stack.base_url + "/health").status_code == 200
    assert all(not fake.seen for fake in stack.fakes.values())


def test_health_ready_metrics(stack: Stack) -> None:
    assert httpx.get(stack.base_url + "/health").json() == {"status": "ok"}
    ready = httpx.get(stack.base_url + "/ready")
    assert ready.status_code == 200 and ready.json()["k"] == stack.artifact.k
    metrics = httpx.get(stack.base_url + "/metrics").text
    assert "triage_backend_up" in metrics and "triage_requests_total" in metrics


def test_feedback_joins_a_past_request(stack: Stack) -> None:
    raw = stack.client().chat.completions.with_raw_response.create(
        model="triage", messages=[{"role": "user", "content": IN_DOMAIN_MATH}])
    ok = httpx.post(stack.base_url + "/v1/feedback", json={"request_id": raw.headers["x-request-id"], "score": 1})
    assert ok.status_code == 200
    backend = raw.headers["x-triage-backend"]
    assert stack.metric("triage_feedback_score_sum", {"backend": backend}) == 1
    unknown = httpx.post(stack.base_url + "/v1/feedback", json={"request_id": "nope", "score": 1})
    assert unknown.status_code == 404 and unknown.json()["error"]["param"] == "request_id"
    log = [json.loads(line) for line in Path(stack.settings.decision_log.path or "").read_text().splitlines()]
    assert [r["type"] for r in log] == ["decision", "feedback"]
    assert log[0]["request_id"] == log[1]["request_id"] and log[0]["backend"] == backend


def test_the_router_freezes_what_it_loaded_and_thaws_it_on_shutdown(artifact: Artifact, embedder: Embedder,
                                                                     tmp_path: Path) -> None:
    """Start-up objects leave the collector's reach while the router serves (no full-collection pauses over
    the model) and come back when it stops."""
    import gc

    settings = fleet_config(artifact, tmp_path)
    fakes = {b.name: FakeBackend(b.model) for b in settings.backends}
    app = create_app(settings, encoder=embedder, transport_for=lambda b: fakes[b.name].transport())
    before = gc.get_freeze_count()
    with serve(app) as url:
        assert httpx.get(url + "/ready").status_code == 200
        assert gc.get_freeze_count() > before + 10_000
    assert gc.get_freeze_count() == 0


def test_the_policys_blas_threads_are_capped_apart_from_the_models(artifact: Artifact, embedder: Embedder,
                                                                    tmp_path: Path) -> None:
    """numpy's BLAS pool gets ``embedder.blas_threads`` (1) whatever the model's thread count: OpenBLAS threads
    spinning after the policy's products cost a 2-thread model ~40 % of its decisions/s (bench/README.md)."""
    from threadpoolctl import OpenBLASController, threadpool_info, threadpool_limits

    threadpool_limits(2, user_api="blas")  # what numpy starts with on two cores
    # threadpoolctl lets only one thread set a process-wide OpenBLAS pool: under `triage serve` the start-up
    # runs on the main thread, here on the test server's thread, which must be allowed to take over.
    OpenBLASController.clear_controlling_thread(force=True)
    settings = fleet_config(artifact, tmp_path, embedder={"threads": 2, "blas_threads": 1})
    fakes = {b.name: FakeBackend(b.model) for b in settings.backends}
    app = create_app(settings, encoder=embedder, transport_for=lambda b: fakes[b.name].transport())
    with serve(app) as url:
        assert httpx.get(url + "/ready").status_code == 200
        blas = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
        assert blas and set(blas) == {1}


def test_domain_level_names_the_domain_through_the_sdk(
    domain_artifact: Artifact, embedder: Embedder, shared_data: Path, tmp_path: Path
) -> None:
    """A real artifact with a domain level (per domain and cluster, format 5), the real embedder, the openai SDK:
    the header names the likeliest calibration domain of a test-split query (rows the calibration never saw)."""
    level = domain_artifact.domains
    assert level is not None and level.weight == 1.0 and level.cell_estimate is not None
    assert level.cell_estimate.shape == (len(level.names), domain_artifact.k, len(domain_artifact.models))
    assert domain_artifact.manifest["format_version"] == 5 and domain_artifact.normalisation == "global"
    lines = (shared_data / "routing" / "routerdc_7model.jsonl").read_text().split("\n")
    rows = [json.loads(line) for line in lines if line]
    first = {d: next(r["query"] for r in rows if r["split"] == "test" and r["domain"] == d)
             for d in ("gsm8k", "cmmlu")}
    with running(domain_artifact, embedder, tmp_path) as stack, stack.client() as client:
        for domain, query in first.items():
            raw = client.chat.completions.with_raw_response.create(
                model="triage:quality", messages=[{"role": "user", "content": query}])
            assert raw.headers["x-triage-domain"] == domain
            route = httpx.post(stack.base_url + "/v1/route", json={"model": "triage:quality",
                                                                   "messages": [{"role": "user", "content": query}]})
            assert route.json()["decision"]["domain"] == domain
