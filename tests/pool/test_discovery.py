"""Replicas found by DNS: lookups keep, add and retire replicas; a real name served by a real process."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from prometheus_client import CollectorRegistry

from bench.harness.fleet import FakeProcess
from router.backends import BackendPool
from router.discovery import Discovery, resolve
from router.metrics import Metrics
from router.settings import BackendSettings, DiscoverSettings, HealthSettings, PoolSettings
from tests.fakes import FakeBackend


def discovered_pool(fakes: dict[str, FakeBackend]) -> BackendPool:
    async def handler(request: httpx.Request) -> httpx.Response:
        return await fakes[request.url.host].handle(request)

    settings = BackendSettings(name="b", model="m", discover=DiscoverSettings(dns="vllm.ns.svc", port=8000))  # type: ignore[call-arg]
    return BackendPool([settings], HealthSettings(probe_interval_s=0), Metrics(CollectorRegistry()),
                       lambda _: httpx.MockTransport(handler))


def test_the_name_itself_serves_until_the_first_lookup() -> None:
    settings = BackendSettings(name="b", model="m", discover={"dns": "vllm.ns.svc", "port": 8000})  # type: ignore[call-arg]
    assert settings.replica_urls() == ["http://vllm.ns.svc:8000/v1"]
    assert DiscoverSettings(dns="x", port=1, path="").url_for("fd00::1") == "http://[fd00::1]:1"


async def test_lookups_keep_add_and_retire_replicas() -> None:
    fakes = {a: FakeBackend("m", reply=f"from {a}") for a in ("10.0.0.1", "10.0.0.2", "10.0.0.3")}
    pool = discovered_pool(fakes)
    answers = [["10.0.0.1", "10.0.0.2"]]

    async def resolver(name: str, port: int) -> list[str]:
        assert (name, port) == ("vllm.ns.svc", 8000)
        return answers[-1]

    discovery = Discovery(pool, resolver)
    backend = pool["b"]
    await discovery.refresh(backend)
    assert [r.url for r in backend.replicas] == ["http://10.0.0.1:8000/v1", "http://10.0.0.2:8000/v1"]
    kept = backend.replicas[1]
    stream = await backend.open_stream("/chat/completions", {"model": "m", "stream": True})
    leaving = stream.replica
    answers.append(["10.0.0.2", "10.0.0.3"] if leaving is not kept else ["10.0.0.1", "10.0.0.3"])
    await discovery.refresh(backend)
    assert leaving not in backend.replicas and len(backend.replicas) == 2
    assert [r.label for r in backend.replicas] == ["0", "1"]
    assert not leaving.client.is_closed  # its stream is still being read
    body = b"".join([chunk async for chunk in stream.chunks()])
    await stream.aclose()
    assert body.endswith(b"data: [DONE]\n\n")
    await discovery.refresh(backend)  # the same answer: nothing changes, the idle retiree is closed
    assert leaving.client.is_closed
    answer = await backend.post_json("/chat/completions", {"model": "m"})
    assert answer.replica in backend.replicas
    await discovery.aclose()
    await pool.aclose()


async def test_a_failed_or_empty_lookup_keeps_the_replicas() -> None:
    pool = discovered_pool({})
    replies: list[list[str] | OSError] = [OSError("no such host"), []]

    async def resolver(name: str, port: int) -> list[str]:
        reply = replies.pop(0)
        if isinstance(reply, OSError):
            raise reply
        return reply

    before = list(pool["b"].replicas)
    discovery = Discovery(pool, resolver)
    for _ in range(2):
        await discovery.refresh(pool["b"])
        assert pool["b"].replicas == before
    await pool.aclose()


async def test_a_real_name_resolves_to_the_replica_serving_it() -> None:
    assert "127.0.0.1" in await resolve("localhost", 80)
    replica = FakeProcess("m").start()
    try:
        settings = BackendSettings(name="b", model="m", discover=DiscoverSettings(  # type: ignore[call-arg]
            dns="localhost", port=replica.port, refresh_s=0.05))
        pool = BackendPool([settings], HealthSettings(probe_interval_s=0), Metrics(CollectorRegistry()),
                           pool=PoolSettings(scrape_interval_s=0))
        pool.start()
        for _ in range(100):
            if any("127.0.0.1" in r.url for r in pool["b"].replicas):
                break
            await asyncio.sleep(0.05)
        assert any(r.url == f"http://127.0.0.1:{replica.port}/v1" for r in pool["b"].replicas)
        for _ in range(4):  # an address nobody listens on (::1 here) is tried, found dead, and retried around
            answer = await pool["b"].post_json("/chat/completions", {
                "model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
            assert answer.data["choices"]
        await pool.aclose()
    finally:
        replica.kill()


@pytest.mark.parametrize("dns", ["bad name", "a/b"])
def test_a_bad_dns_name_is_refused(dns: str) -> None:
    with pytest.raises(ValueError):
        DiscoverSettings(dns=dns)
