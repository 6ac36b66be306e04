import asyncio
import logging

import httpx
import pytest
from prometheus_client import CollectorRegistry

from router.backends import BackendBusy, BackendClientError, BackendError, BackendPool, retry_after
from router.metrics import Metrics
from router.settings import BackendSettings, HealthSettings
from tests.fakes import FakeBackend


def pool_for(fake: FakeBackend, **health: float) -> tuple[BackendPool, Metrics]:
    settings = BackendSettings(name="b", base_url="http://b.test/v1", model=fake.served_model, api_key="sk-secret")
    metrics = Metrics(CollectorRegistry())
    pool = BackendPool([settings], HealthSettings(probe_interval_s=0, **health), metrics,
                       lambda _: fake.transport())
    return pool, metrics


async def test_json_call_sends_the_key_and_returns_the_body() -> None:
    seen: list[httpx.Request] = []
    fake = FakeBackend("m")

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return await fake.handle(request)

    settings = BackendSettings(name="b", base_url="http://b.test/v1", model="m", api_key="sk-secret")
    pool = BackendPool([settings], HealthSettings(probe_interval_s=0), Metrics(CollectorRegistry()),
                       lambda _: httpx.MockTransport(handler))
    data = (await pool["b"].post_json("/chat/completions", {"model": "m", "messages": []})).data
    assert data["choices"][0]["message"]["content"] == fake.reply
    assert seen[0].url == "http://b.test/v1/chat/completions"
    assert seen[0].headers["authorization"] == "Bearer sk-secret"
    await pool.aclose()


@pytest.mark.parametrize("fault", ["500", "connect", "malformed"])
async def test_failures_raise_backend_error_and_open_the_circuit(fault: str) -> None:
    pool, metrics = pool_for(FakeBackend("m", fault=fault), failure_threshold=2)
    for _ in range(2):
        with pytest.raises(BackendError) as info:
            await pool["b"].post_json("/chat/completions", {"model": "m"})
        assert "sk-secret" not in str(info.value) and "b.test" not in str(info.value)
    assert pool.available() == set()
    assert metrics.registry.get_sample_value("triage_circuit_state", {"backend": "b"}) == 2
    assert metrics.registry.get_sample_value("triage_backend_up", {"backend": "b"}) == 0
    await pool.aclose()


async def test_a_4xx_is_the_clients_fault_and_keeps_the_circuit_closed() -> None:
    pool, _ = pool_for(FakeBackend("m", fault="400"), failure_threshold=1)
    with pytest.raises(BackendClientError) as info:
        await pool["b"].post_json("/chat/completions", {"model": "m"})
    assert info.value.status == 400
    assert info.value.body["error"]["param"] == "max_tokens"
    assert info.value.body["error"]["code"] == "invalid_request"
    assert pool.available() == {"b"}
    await pool.aclose()


async def test_stream_returns_after_the_first_chunk_and_relays_the_rest() -> None:
    pool, _ = pool_for(FakeBackend("m", reply="one two three"))
    stream = await pool["b"].open_stream("/chat/completions", {"model": "m", "stream": True})
    assert stream.first.startswith(b"data: ")
    body = b"".join([chunk async for chunk in stream.chunks()])
    await stream.aclose()
    assert body.endswith(b"data: [DONE]\n\n") and body.count(b"chat.completion.chunk") == 3
    await pool.aclose()


async def test_probe_opens_the_circuit_and_only_a_half_open_one_closes_on_success() -> None:
    fake = FakeBackend("m", fault="connect")
    pool, _ = pool_for(fake, failure_threshold=2, open_seconds=0.2)
    assert await pool.probe_all() == {"b": False}
    assert pool.available() == set()  # suspect at once
    await pool.probe_all()
    fake.fault = None
    assert await pool.probe_all() == {"b": True}
    assert pool.available() == set()  # still open: a listing of models is no proof that generation works
    await asyncio.sleep(0.25)
    assert await pool.probe_all() == {"b": True}
    assert pool["b"].circuit.state == "closed" and pool.available() == {"b"}
    await pool.aclose()


async def test_one_failed_call_takes_the_backend_out_at_once_and_a_live_probe_brings_it_back() -> None:
    fake = FakeBackend("m", fault="connect")
    pool, metrics = pool_for(fake, failure_threshold=3)
    with pytest.raises(BackendError):
        await pool["b"].post_json("/chat/completions", {"model": "m"})
    assert pool["b"].circuit.state == "closed"  # below the threshold, and yet:
    assert pool.available() == set()
    assert metrics.registry.get_sample_value("triage_backend_up", {"backend": "b"}) == 0
    assert metrics.registry.get_sample_value("triage_replica_up", {"backend": "b", "replica": "0"}) == 0
    fake.fault = None
    assert await pool.probe_all() == {"b": True}
    assert pool.available() == {"b"}
    assert metrics.registry.get_sample_value("triage_backend_up", {"backend": "b"}) == 1
    await pool.aclose()


@pytest.mark.parametrize("body", [
    {"error": {"message": "This model's maximum context length is 2048 tokens.", "type": "BadRequestError",
               "param": None, "code": 400}},
    {"object": "error", "message": "This model's maximum context length is 2048 tokens.", "type":
     "BadRequestError", "param": None, "code": 400},  # vLLM's older flat shape
])
async def test_a_vllm_400_reaches_the_client_in_openai_shape_with_a_string_code(body: dict[str, object]) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json=body)

    settings = BackendSettings(name="b", base_url="http://b.test/v1", model="m")
    pool = BackendPool([settings], HealthSettings(probe_interval_s=0), Metrics(CollectorRegistry()),
                       lambda _: httpx.MockTransport(handler))
    for call in (pool["b"].post_json, pool["b"].open_stream):
        with pytest.raises(BackendClientError) as info:
            await call("/chat/completions", {"model": "m"})
        assert info.value.body == {"error": {"message": "This model's maximum context length is 2048 tokens.",
                                             "type": "invalid_request_error", "param": None,
                                             "code": "invalid_request"}}
    await pool.aclose()


async def test_a_429_carries_its_retry_after_and_leaves_the_circuit_alone() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, headers={"retry-after": "7"}, json={"error": {"message": "busy"}})

    settings = BackendSettings(name="b", base_url="http://b.test/v1", model="m")
    pool = BackendPool([settings], HealthSettings(probe_interval_s=0, failure_threshold=1),
                       Metrics(CollectorRegistry()), lambda _: httpx.MockTransport(handler))
    for call in (pool["b"].post_json, pool["b"].open_stream):
        with pytest.raises(BackendBusy) as info:
            await call("/chat/completions", {"model": "m"})
        assert info.value.retry_after == 7.0 and info.value.status == 429
    assert pool.available() == {"b"}
    await pool.aclose()


def test_retry_after_reads_seconds_and_dates() -> None:
    assert retry_after(httpx.Headers({"retry-after": "2.5"})) == 2.5
    assert retry_after(httpx.Headers({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"})) == 0.0  # in the past
    assert retry_after(httpx.Headers({"retry-after": "soon"})) is None
    assert retry_after(httpx.Headers()) is None


async def test_the_probe_logs_a_change_of_state_once_not_every_round(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeBackend("m", fault="connect")
    pool, _ = pool_for(fake, failure_threshold=2)
    with caplog.at_level(logging.INFO, logger="triage.backends"):
        for _ in range(4):
            await pool.probe_all()
        fake.fault = None
        await pool.probe_all()  # the circuit is open: alive, but still not offered
        await pool.probe_all()
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["backend b replica 0 is down (a call or probe failed)",
                        "circuit of backend b replica 0 is now open"]
    await pool.aclose()
