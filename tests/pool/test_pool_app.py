"""The load-aware router over real HTTP: decisions on an idle pool are the quality-only ones, exactly; a
saturated pool answers 429 with retry-after in OpenAI's shape, and nothing hangs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from bench.harness.synthetic import write_synthetic_artifact
from router.app import create_app
from router.artifact import Artifact
from router.embedding import TextEncoder
from router.settings import load_settings
from tests.fakes import FakeBackend
from tests.server import serve

MODELS = ["general", "math", "code", "law"]
QUERIES = [f"What is {i} times {i + 7}, and why?" for i in range(12)] + [
    "Write a Python function that reverses a linked list.", "Is a verbal contract binding in Germany?",
    "My order #4412 arrived damaged, how do I get a refund?", "Translate 'good morning' into French.",
    "Prove that the square root of 2 is irrational.", "Explain the difference between TCP and UDP.",
] * 2


@contextmanager
def router(artifact: Artifact, embedder: TextEncoder, tmp_path: Path, pool: dict[str, Any],
           latency_s: float = 0.0) -> Iterator[str]:
    backends = [{"name": m, "base_url": f"http://{m}.test/v1", "model": f"served-{m}", "max_concurrency": 1,
                 "role": "generalist" if m == "general" else "specialist"} for m in MODELS]
    path = tmp_path / f"triage-{len(list(tmp_path.iterdir()))}.yaml"
    path.write_text(json.dumps({"artifact": str(artifact.path), "backends": backends, "pool": pool,
                                "health": {"probe_interval_s": 0}}))
    fakes = {f"{m}.test": FakeBackend(f"served-{m}") for m in MODELS}

    async def handler(request: httpx.Request) -> httpx.Response:
        if latency_s and not request.url.path.endswith("/metrics"):
            await asyncio.sleep(latency_s)
        return await fakes[request.url.host].handle(request)

    app = create_app(load_settings(path, environ={}), encoder=embedder,
                     transport_for=lambda _: httpx.MockTransport(handler))
    with serve(app) as url:
        yield url


def decisions(url: str) -> list[tuple[str, str]]:
    out = []
    for query in QUERIES:
        response = httpx.post(url + "/v1/chat/completions", timeout=30, json={
            "model": "triage", "messages": [{"role": "user", "content": query}]})
        assert response.status_code == 200
        out.append((response.headers["x-triage-backend"], response.headers["x-triage-reason"]))
    return out


def test_an_idle_pool_routes_exactly_as_quality_only_routing(embedder: TextEncoder, tmp_path: Path) -> None:
    artifact = write_synthetic_artifact(tmp_path / "artifact", k=6, models=MODELS, n_reference=600)
    with router(artifact, embedder, tmp_path, {"max_queue_ms": None}) as url:
        quality_only = decisions(url)
    with router(artifact, embedder, tmp_path, {"max_queue_ms": 0}) as url:  # the tightest budget there is
        load_aware = decisions(url)
    assert load_aware == quality_only
    assert len({backend for backend, _ in quality_only}) > 1  # the queries do exercise the choice


def test_a_saturated_pool_answers_429_with_retry_after_and_nothing_hangs(embedder: TextEncoder,
                                                                         tmp_path: Path) -> None:
    artifact = write_synthetic_artifact(tmp_path / "artifact", k=6, models=MODELS, n_reference=600)
    pool = {"max_queue_ms": 100, "queue_timeout_s": 0.2, "queue_size": 4, "scrape_interval_s": 0}

    async def burst(url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            return await asyncio.gather(*(client.post(url + "/v1/chat/completions", json={
                "model": "triage", "messages": [{"role": "user", "content": QUERIES[0]}]}) for _ in range(10)))

    with router(artifact, embedder, tmp_path, pool, latency_s=1.5) as url:
        responses = asyncio.run(burst(url))
    codes = sorted(r.status_code for r in responses)
    assert set(codes) == {200, 429} and codes.count(200) <= len(MODELS)  # one slot per model
    for response in responses:
        if response.status_code == 429:
            assert int(response.headers["retry-after"]) >= 1
            assert response.json()["error"]["type"] == "rate_limit_error"
            assert "queue budget" in response.json()["error"]["message"]
        else:
            assert response.headers["x-triage-reason"] in ("best", "spillover", "cliff", "ood_fallback",
                                                           "ood_margin")


def test_a_request_sets_its_own_queue_budget(embedder: TextEncoder, tmp_path: Path) -> None:
    artifact = write_synthetic_artifact(tmp_path / "artifact", k=6, models=MODELS, n_reference=600)
    pool = {"max_queue_ms": None, "queue_timeout_s": 0.2, "queue_size": 4, "scrape_interval_s": 0}

    async def burst(url: str, options: dict[str, Any]) -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            return await asyncio.gather(*(client.post(url + "/v1/chat/completions", json={
                "model": "triage", "messages": [{"role": "user", "content": QUERIES[0]}], **options})
                for _ in range(10)))

    with router(artifact, embedder, tmp_path, pool, latency_s=1.0) as url:
        unbounded = asyncio.run(burst(url, {}))  # no budget anywhere: everyone waits its turn
        budgeted = asyncio.run(burst(url, {"triage": {"max_queue_ms": 100}}))
    assert {r.status_code for r in unbounded} == {200}
    assert 429 in {r.status_code for r in budgeted}
