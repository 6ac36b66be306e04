"""Timing one OpenAI-style request from the client's side: total time, and time to the first token in a stream."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from bench.harness.outcomes import percentile
from bench.harness.rawhttp import Pool, request_bytes


@dataclass
class Timed:
    ok: bool
    total: float
    first_token: float | None = None


async def timed_raw(pool: Pool, url: str, body: dict[str, Any], headers: dict[str, str]) -> Timed:
    """POSTs ``body`` on bench/harness/rawhttp.py's lean client (serialised before the clock starts); for a stream, the
    first token is the first chunk with content (not the role chunk)."""
    parts = urlsplit(url)
    payload = request_bytes(parts.netloc, parts.path, body, headers)
    first: float | None = None
    pending = b""

    def on_chunk(chunk: bytes) -> None:
        nonlocal first, pending
        if first is None:
            pending += chunk
            *events, pending = pending.split(b"\n\n")
            if any(_has_token(event) for event in events):
                first = time.perf_counter() - started

    started = time.perf_counter()
    status, content = await pool.request(url, parts.path, payload, on_chunk if body.get("stream") else None)
    total = time.perf_counter() - started
    if body.get("stream"):
        return Timed(status == 200 and content.rstrip().endswith(b"data: [DONE]"), total, first)
    return Timed(status == 200 and b'"choices"' in content, total)


def _has_token(event: bytes) -> bool:
    """Whether an SSE event carries generated text (any server's spacing; the role-only chunk does not count)."""
    data = event.strip().removeprefix(b"data:").strip()
    if not data.startswith(b"{"):
        return False
    try:
        payload = json.loads(data)
    except ValueError:
        return False
    for choice in payload.get("choices") or []:
        if (choice.get("delta") or {}).get("content") or choice.get("text"):
            return True
    return False


@dataclass
class Series:
    """All timings of one row of a table (one target, one mode, one concurrency)."""

    total: list[float] = field(default_factory=list)
    first_token: list[float] = field(default_factory=list)
    failures: int = 0
    errors: list[str] = field(default_factory=list)  # what the failures were (the first few are printed)

    def add(self, timed: Timed) -> None:
        if not timed.ok:
            self.failures += 1
            return
        self.total.append(timed.total)
        if timed.first_token is not None:
            self.first_token.append(timed.first_token)

    def p(self, q: float, ttft: bool = False) -> float:
        """Percentile in milliseconds."""
        return percentile(self.first_token if ttft else self.total, q) * 1000
