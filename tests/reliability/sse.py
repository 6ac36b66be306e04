"""Reading Server-Sent Events the strict way a client must: every event parses, the stream ends in [DONE]."""

from __future__ import annotations

import json
from typing import Any


def events(raw: bytes) -> list[str]:
    """The ``data:`` payload of each event, in order (``[DONE]`` included)."""
    out = []
    for block in raw.replace(b"\r\n", b"\n").split(b"\n\n"):
        if not block.strip():
            continue
        lines = [line for line in block.split(b"\n") if line.startswith(b"data:")]
        out.append(b"\n".join(line[5:].strip() for line in lines).decode())
    return out


def parse(raw: bytes) -> tuple[list[dict[str, Any]], bool]:
    """(payloads, ended with [DONE]); raises ValueError if an event is not JSON (a torn event)."""
    data = events(raw)
    done = bool(data) and data[-1] == "[DONE]"
    payloads = [json.loads(d) for d in (data[:-1] if done else data)]
    return payloads, done


def text(payloads: list[dict[str, Any]]) -> str:
    return "".join((c.get("delta") or {}).get("content") or c.get("text") or ""
                   for p in payloads for c in p.get("choices") or [])
