"""A lean HTTP/1.1 load generator: keep-alive connections on asyncio streams, request bytes built up front.

On two cores the load generator shares the machine with the server it measures. httpx spends about a
millisecond of CPU per request, so at a few hundred requests/s it saturates its core before the server
does, and the bench measures the client. This one does the least a client can (write prebuilt bytes, read
the status line, headers and a Content-Length body) so the server is what runs out of CPU. It is for
benches against our own 127.0.0.1 servers only: no TLS, no chunked bodies, no redirects.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit


class HttpError(Exception):
    pass


def request_bytes(host: str, path: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> bytes:
    payload = json.dumps(body).encode()
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    head = (f"POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n{extra}"
            f"content-length: {len(payload)}\r\n\r\n")
    return head.encode() + payload


async def _read_response(reader: asyncio.StreamReader,
                         on_chunk: Callable[[bytes], None] | None = None) -> tuple[int, bytes]:
    """Status and body; a chunked body (SSE) is read chunk by chunk, each passed to ``on_chunk`` on arrival."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length, chunked = 0, False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
    if not chunked:
        body = await reader.readexactly(length) if length else b""
        if on_chunk is not None and body:
            on_chunk(body)
        return status, body
    parts: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return status, b"".join(parts)
        chunk = (await reader.readexactly(size + 2))[:-2]
        parts.append(chunk)
        if on_chunk is not None:
            on_chunk(chunk)


class Pool:
    """Idle keep-alive connections per (host, port); a client takes one per request and gives it back."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, int], list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]] = {}

    async def request(self, url: str, path: str, payload: bytes,
                      on_chunk: Callable[[bytes], None] | None = None) -> tuple[int, bytes]:
        parts = urlsplit(url)
        key = (parts.hostname or "127.0.0.1", parts.port or 80)
        idle = self._idle.setdefault(key, [])
        while idle and idle[-1][0].at_eof():  # the server closed it while it sat idle (uvicorn: after 5 s)
            idle.pop()[1].close()
        reader, writer = idle.pop() if idle else await asyncio.open_connection(*key)
        try:
            writer.write(payload)
            result = await _read_response(reader, on_chunk)
        except BaseException:
            writer.close()
            raise
        idle.append((reader, writer))
        return result

    def close(self) -> None:
        for connections in self._idle.values():
            for _, writer in connections:
                writer.close()
        self._idle.clear()


async def post_many(url: str, path: str, bodies: Iterator[dict[str, Any]], concurrency: int,
                    requests: int) -> tuple[list[float], float]:
    """Latencies (s) of ``requests`` POSTs from ``concurrency`` keep-alive connections, and the wall time.

    Bodies are serialised before the clock starts; any non-2xx answer raises ``HttpError``.
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    prepared = [request_bytes(f"{host}:{port}", path, next(bodies)) for _ in range(requests)]
    latencies: list[float] = []
    position = 0

    async def one_connection() -> None:
        nonlocal position
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while position < len(prepared):
                payload = prepared[position]
                position += 1
                started = time.perf_counter()
                writer.write(payload)
                status, body = await _read_response(reader)
                latencies.append(time.perf_counter() - started)
                if not 200 <= status < 300:
                    raise HttpError(f"HTTP {status}: {body[:200]!r}")
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(one_connection() for _ in range(concurrency)))
    return latencies, time.perf_counter() - started


def run(url: str, path: str, bodies: Iterator[dict[str, Any]], concurrency: int,
        requests: int) -> tuple[list[float], float]:
    """``post_many`` on uvloop when it is installed (it halves the client's own CPU per request)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(post_many(url, path, bodies, concurrency, requests))
    return uvloop.run(post_many(url, path, bodies, concurrency, requests))
