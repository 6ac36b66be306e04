"""The shared state on a real redis-server: limits that hold across replicas, records any replica can read,
and the fallback to per-process counting while Redis is down, back to Redis when it returns."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from router.state import LocalState, RedisState, ResilientState
from tests.scaleout.parts import RedisServer


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop()


async def test_two_replicas_admit_exactly_the_limit_together(redis_server: RedisServer) -> None:
    replicas = [RedisState(redis_server.url, timeout_s=2.0) for _ in range(2)]
    try:
        async def one(i: int) -> bool:
            return await replicas[i % 2].admit("key", 60, None, 0, f"e{i}") is None

        admitted = await asyncio.gather(*(one(i) for i in range(100)))
        assert sum(admitted) == 60
        refusal = await replicas[0].admit("key", 60, None, 0, "late")
        assert refusal is not None and refusal.what == "requests" and 0 < refusal.retry_after <= 60
        assert await replicas[1].admit("another key", 60, None, 0, "x") is None  # one key's window only
    finally:
        for replica in replicas:
            await replica.close()


async def test_token_reservations_are_shared_and_settled(redis_server: RedisServer) -> None:
    a, b = RedisState(redis_server.url, 2.0), RedisState(redis_server.url, 2.0)
    try:
        assert await a.admit("key", None, 100, 60, "first") is None
        refusal = await b.admit("key", None, 100, 60, "second")
        assert refusal is not None and refusal.what == "tokens"
        await a.settle("key", "first", 10)  # it used 10 of its 60
        assert await b.admit("key", None, 100, 60, "second") is None
        assert await a.admit("key", None, 100, 31, "third") is not None  # 10 + 60 + 31 > 100
        assert await a.admit("key", None, 100, 30, "third") is None
    finally:
        await a.close()
        await b.close()


async def test_request_records_and_feedback_are_shared_once(redis_server: RedisServer) -> None:
    a, b = RedisState(redis_server.url, 2.0), RedisState(redis_server.url, 2.0)
    try:
        await a.remember("req-1", {"backend": "m", "cluster": 3, "key": "digest"}, ttl_s=1.0)
        assert await b.recall("req-1") == {"backend": "m", "cluster": 3, "key": "digest"}
        assert await b.claim_feedback("req-1", {"score": 1.0}, ttl_s=1.0)
        assert not await a.claim_feedback("req-1", {"score": 0.0}, ttl_s=1.0)
        await asyncio.sleep(1.2)
        assert await b.recall("req-1") is None  # the feedback window is the record's lifetime
    finally:
        await a.close()
        await b.close()


async def test_redis_down_falls_back_per_process_and_recovers(redis_server: RedisServer) -> None:
    registry = CollectorRegistry()
    state = ResilientState(RedisState(redis_server.url, 0.25), LocalState(), retry_s=0.2, registry=registry)
    await state.start()
    try:
        assert state.status == "redis" and registry.get_sample_value("triage_shared_state_up") == 1
        assert await state.admit("key", 2, None, 0, "a") is None

        redis_server.stop()
        started = time.monotonic()
        assert await state.admit("key", 2, None, 0, "b") is None  # counted locally: the replica keeps serving
        assert time.monotonic() - started < 2
        assert state.status == "degraded"
        assert registry.get_sample_value("triage_shared_state_up") == 0
        assert (registry.get_sample_value("triage_shared_state_errors_total") or 0) >= 1
        assert await state.admit("key", 2, None, 0, "c") is None
        assert await state.admit("key", 2, None, 0, "d") is not None  # the local window holds the limit too
        await state.remember("while-down", {"backend": "m"}, ttl_s=60)

        redis_server.start()  # the same port, an empty Redis
        deadline = time.monotonic() + 10
        while state.status != "redis":
            assert time.monotonic() < deadline, "the shared state did not come back to Redis"
            await asyncio.sleep(0.05)
        assert registry.get_sample_value("triage_shared_state_up") == 1
        assert await state.admit("key", 2, None, 0, "e") is None  # counted in Redis again
        assert await state.redis.admit("key", 2, None, 0, "f") is None
        assert await state.redis.admit("key", 2, None, 0, "g") is not None
        assert await state.recall("while-down") == {"backend": "m"}  # kept locally, still found
    finally:
        await state.close()
