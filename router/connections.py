"""Connections to one backend: several small httpx connection pools instead of one large one.

httpcore's pool (1.0.9) re-examines every connection it holds, and for each idle one counts them all again,
whenever a request starts or its response ends: a burst of n concurrent requests to one backend costs about
n^3 checks, so the last of a burst of streams waits several times longer than through a few smaller pools
(bench/README.md measures it). ``ShardedTransport`` spreads requests over ``shards`` pools of ``1/shards`` the size
each, always taking the pool with the fewest requests in flight (the first on ties, so light traffic keeps
reusing one warm connection).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import httpx

SHARDS = 8


class _Shard:
    def __init__(self, limits: httpx.Limits) -> None:
        self.transport = httpx.AsyncHTTPTransport(limits=limits)
        self.in_flight = 0


class _Counted(httpx.AsyncByteStream):
    """A response body that gives its request's place in the shard back once, when it is closed."""

    def __init__(self, inner: httpx.AsyncByteStream, shard: _Shard) -> None:
        self._inner, self._shard, self._open = inner, shard, True

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            yield chunk

    async def aclose(self) -> None:
        if self._open:
            self._open = False
            self._shard.in_flight -= 1
        await self._inner.aclose()


class ShardedTransport(httpx.AsyncBaseTransport):
    """``shards`` connection pools of ``max_connections / shards`` each. A pool keeps all its connections alive
    between requests (up to its size): dropping the surplus and reopening it on the next burst cost more than it
    saved (the backend closes connections idle past its own keep-alive timeout anyway)."""

    def __init__(self, max_connections: int, shards: int = SHARDS) -> None:
        size = math.ceil(max_connections / shards)
        self.shards = [_Shard(httpx.Limits(max_connections=size, max_keepalive_connections=size))
                       for _ in range(shards)]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        shard = min(self.shards, key=lambda s: s.in_flight)
        shard.in_flight += 1
        try:
            response = await shard.transport.handle_async_request(request)
        except BaseException:
            shard.in_flight -= 1
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _Counted(response.stream, shard)
        return response

    async def aclose(self) -> None:
        for shard in self.shards:
            await shard.transport.aclose()
