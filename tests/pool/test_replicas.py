"""Replicas of one model: least-outstanding choice, a failed replica retried on another before the chain moves
on, per-replica health and metrics; over MockTransport fakes, real fake-vLLM processes, and the app via the SDK."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client import CollectorRegistry

from bench.harness.fleet import FakeProcess
from bench.harness.synthetic import write_synthetic_artifact
from router.app import create_app
from router.backends import BackendError, BackendPool
from router.embedding import TextEncoder
from router.metrics import Metrics
from router.settings import BackendSettings, ConfigError, HealthSettings, load_settings
from tests.fakes import FakeBackend
from tests.server import serve

URLS = ["http://r0.test/v1", "http://r1.test/v1"]


def by_host(fakes: dict[str, FakeBackend]) -> httpx.MockTransport:
    async def handler(request: httpx.Request) -> httpx.Response:
        return await fakes[request.url.host].handle(request)

    return httpx.MockTransport(handler)


def replica_pool(fakes: dict[str, FakeBackend], **health: float) -> tuple[BackendPool, Metrics]:
    settings = BackendSettings(name="b", replicas=URLS, model="m")  # type: ignore[call-arg]
    metrics = Metrics(CollectorRegistry())
    pool = BackendPool([settings], HealthSettings(probe_interval_s=0, **health), metrics,
                       lambda _: by_host(fakes))
    return pool, metrics


def test_replicas_beside_or_instead_of_base_url() -> None:
    alone = BackendSettings(name="b", replicas=URLS, model="m")  # type: ignore[call-arg]
    assert alone.base_url == URLS[0] and alone.replica_urls() == URLS
    beside = BackendSettings(name="b", base_url="http://r9.test/v1/", replicas=URLS, model="m")
    assert beside.replica_urls() == ["http://r9.test/v1", *URLS]
    assert BackendSettings(name="b", base_url=URLS[0], model="m").replica_urls() == URLS[:1]


@pytest.mark.parametrize("backend", [
    {"replicas": [URLS[0], URLS[0]]},
    {"replicas": ["ftp://r0.test"]},
    {"replicas": URLS, "discover": {"dns": "vllm.ns.svc"}},
    {},
])
def test_bad_replica_configs_are_refused(backend: dict[str, object], tmp_path: Path) -> None:
    config = {"artifact": "a", "backends": [{"name": "g", "model": "m", "role": "generalist", **backend}]}
    path = tmp_path / "c.yaml"
    path.write_text(json.dumps(config))
    with pytest.raises(ConfigError):
        load_settings(path, environ={})


async def test_idle_requests_take_the_replicas_in_turn_and_busy_ones_are_avoided() -> None:
    fakes = {"r0.test": FakeBackend("m"), "r1.test": FakeBackend("m")}
    pool, _ = replica_pool(fakes)
    used = [(await pool["b"].post_json("/chat/completions", {"model": "m"})).replica.label for _ in range(4)]
    assert sorted(used) == ["0", "0", "1", "1"] and used[0] != used[1]
    stream = await pool["b"].open_stream("/chat/completions", {"model": "m", "stream": True})
    busy = stream.replica
    assert busy.in_flight == 1  # a stream holds its place until it is closed
    others = [(await pool["b"].post_json("/chat/completions", {"model": "m"})).replica for _ in range(3)]
    assert all(r is not busy for r in others)
    await stream.aclose()
    assert busy.in_flight == 0
    await pool.aclose()


@pytest.mark.parametrize("fault", ["connect", "500"])
@pytest.mark.parametrize("stream", [False, True])
async def test_a_failing_replica_is_retried_on_another_before_the_model_is_given_up(
        fault: str, stream: bool) -> None:
    fakes = {"r0.test": FakeBackend("m", fault=fault), "r1.test": FakeBackend("m")}
    pool, metrics = replica_pool(fakes, failure_threshold=3)
    for _ in range(3):
        if stream:
            opened = await pool["b"].open_stream("/chat/completions", {"model": "m", "stream": True})
            replica = opened.replica
            await opened.aclose()
        else:
            replica = (await pool["b"].post_json("/chat/completions", {"model": "m"})).replica
        assert replica.label == "1"
    # Refused: suspect after its first failure, not tried again. Answering 500: alive, tried until the circuit
    # opens at the threshold (requests alternate, so it meets two of the three).
    failed = 1 if fault == "connect" else 2
    assert len(fakes["r0.test"].seen) == failed
    assert pool.available() == {"b"}
    sample = metrics.registry.get_sample_value
    assert sample("triage_replica_up", {"backend": "b", "replica": "0"}) == (0 if fault == "connect" else 1)
    assert sample("triage_replica_up", {"backend": "b", "replica": "1"}) == 1
    assert sample("triage_backend_up", {"backend": "b"}) == 1
    assert sample("triage_replica_requests_total", {"backend": "b", "replica": "1", "outcome": "ok"}) == 3
    assert sample("triage_replica_requests_total", {"backend": "b", "replica": "0", "outcome": "failed"}) == failed
    await pool.aclose()


async def test_every_replica_unreachable_fails_the_backend_and_takes_it_out() -> None:
    fakes = {"r0.test": FakeBackend("m", fault="connect"), "r1.test": FakeBackend("m", fault="connect")}
    pool, metrics = replica_pool(fakes)
    with pytest.raises(BackendError):
        await pool["b"].post_json("/chat/completions", {"model": "m"})
    assert [len(f.seen) for f in fakes.values()] == [1, 1]
    assert pool.available() == set()
    assert metrics.registry.get_sample_value("triage_backend_up", {"backend": "b"}) == 0
    # The caller may still choose it (a pinned request, the last generalist): one replica is tried, not none.
    with pytest.raises(BackendError):
        await pool["b"].post_json("/chat/completions", {"model": "m"})
    assert sum(len(f.seen) for f in fakes.values()) == 3
    await pool.aclose()


async def test_a_replica_killed_mid_run_loses_no_request_and_the_survivor_takes_the_traffic() -> None:
    replicas = [FakeProcess("m", {"latency_ms": 20}).start() for _ in range(2)]
    try:
        settings = BackendSettings(name="b", replicas=[r.base_url for r in replicas], model="m")  # type: ignore[call-arg]
        pool = BackendPool([settings], HealthSettings(probe_interval_s=0), Metrics(CollectorRegistry()))
        used: list[str] = []

        async def one() -> None:
            answer = await pool["b"].post_json("/chat/completions", {
                "model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
            used.append(answer.replica.label)

        await asyncio.gather(*(one() for _ in range(20)))
        assert set(used) == {"0", "1"}
        replicas[0].kill()
        used.clear()
        await asyncio.gather(*(one() for _ in range(40)))  # raises if any request is lost
        assert len(used) == 40 and used.count("1") == 40
        assert pool.available() == {"b"}
        await pool.aclose()
    finally:
        for replica in replicas:
            replica.kill()


def test_the_sdk_sees_which_replica_answered(embedder: TextEncoder, tmp_path: Path) -> None:
    models = ["general", "math", "code"]
    artifact = write_synthetic_artifact(tmp_path / "artifact", k=4, models=models, n_reference=200)
    backends = [{"name": m, "model": f"served-{m}", "role": "generalist" if m == "general" else "specialist",
                 **({"replicas": ["http://general-a.test/v1", "http://general-b.test/v1"]} if m == "general"
                    else {"base_url": f"http://{m}.test/v1"})} for m in models]
    path = tmp_path / "triage.yaml"
    path.write_text(json.dumps({"artifact": str(artifact.path), "backends": backends,
                                "health": {"probe_interval_s": 0}}))
    settings = load_settings(path, environ={})
    fakes = {f"{m}.test": FakeBackend(f"served-{m}") for m in models}
    fakes["general-a.test"] = FakeBackend("served-general", fault="connect")
    fakes["general-b.test"] = FakeBackend("served-general", reply="from replica b")
    registry = CollectorRegistry()
    app = create_app(settings, registry=registry, encoder=embedder, transport_for=lambda _: by_host(fakes))
    with serve(app) as base_url:
        client = openai.OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0)
        for stream in (False, True, False):
            raw = client.chat.completions.with_raw_response.create(
                model="general", messages=[{"role": "user", "content": "hello"}], stream=stream)
            parsed = raw.parse()
            if isinstance(parsed, openai.Stream):
                text = "".join(c.choices[0].delta.content or "" for c in parsed if c.choices)
            else:
                text = parsed.choices[0].message.content or ""
            assert text.strip() == "from replica b"
            assert raw.headers["x-triage-backend"] == "general" and raw.headers["x-triage-replica"] == "1"
            assert raw.headers["x-triage-reason"] == "pinned"  # the model answered: no fallback
        assert httpx.get(base_url + "/ready", timeout=10).status_code == 200
        assert len(fakes["general-a.test"].seen) == 1  # suspect after one failure: not tried again
        assert registry.get_sample_value("triage_replica_up", {"backend": "general", "replica": "0"}) == 0
        assert registry.get_sample_value("triage_backend_up", {"backend": "general"}) == 1
