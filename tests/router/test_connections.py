"""The sharded transport against a real uvicorn server: concurrent requests are spread over the pools, light
traffic stays on one, and every request gives its place back however it ends."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from router.connections import ShardedTransport
from tests.server import serve


def server_app() -> FastAPI:
    app = FastAPI()

    @app.get("/slow")
    async def slow() -> dict[str, str]:
        await asyncio.sleep(0.3)
        return {"ok": "yes"}

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for i in range(3):
                yield f"data: {i}\n\n".encode()
                await asyncio.sleep(0.01)

        return StreamingResponse(chunks(), media_type="text/event-stream")

    return app


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with serve(server_app()) as url:
        yield url


async def test_a_burst_is_spread_over_the_pools_and_every_place_is_given_back(base_url: str) -> None:
    transport = ShardedTransport(max_connections=64, shards=4)
    async with httpx.AsyncClient(base_url=base_url, transport=transport) as client:
        requests = [asyncio.create_task(client.get("/slow")) for _ in range(12)]
        await asyncio.sleep(0.15)  # all twelve are waiting on the server now
        assert [s.in_flight for s in transport.shards] == [3, 3, 3, 3]
        assert all(r.status_code == 200 for r in await asyncio.gather(*requests))
        assert [s.in_flight for s in transport.shards] == [0, 0, 0, 0]


async def test_one_request_at_a_time_reuses_the_first_pool(base_url: str) -> None:
    transport = ShardedTransport(max_connections=64, shards=4)
    async with httpx.AsyncClient(base_url=base_url, transport=transport) as client:
        for _ in range(3):
            async with client.stream("GET", "/stream") as response:
                assert transport.shards[0].in_flight == 1  # until the body is read to its end
                assert [line async for line in response.aiter_lines() if line] == ["data: 0", "data: 1", "data: 2"]
            assert transport.shards[0].in_flight == 0
        # The pools that took no request opened no connection.
        assert [len(s.transport._pool.connections) for s in transport.shards] == [1, 0, 0, 0]


async def test_a_stream_closed_early_and_a_failed_connect_give_their_place_back(base_url: str) -> None:
    transport = ShardedTransport(max_connections=8, shards=2)
    async with httpx.AsyncClient(base_url=base_url, transport=transport) as client:
        async with client.stream("GET", "/stream") as response:
            await response.aiter_bytes().__anext__()  # the client leaves after the first chunk
        assert [s.in_flight for s in transport.shards] == [0, 0]
        with socket.socket() as unused:
            unused.bind(("127.0.0.1", 0))
            port = unused.getsockname()[1]  # bound but not listening: connections are refused
            with pytest.raises(httpx.ConnectError):
                await client.get(f"http://127.0.0.1:{port}/")
        assert [s.in_flight for s in transport.shards] == [0, 0]

