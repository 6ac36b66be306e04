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
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit


class HttpError(Exception):
    pass


def request_bytes(host: str, path: str, body: dict[str, Any]) -> bytes:
    payload = json.dumps(body).encode()
    head = (f"POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(payload)}\r\n\r\n")
    return head.encode() + payload


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    body = await reader.readexactly(length) if length else b""
    return status, body


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
