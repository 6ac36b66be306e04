"""Server-sent events passing through Triage: read the usage, forward the bytes untouched.

Triage always asks the backend for usage in streams (to account cost); if the client did not ask for it,
the usage-only final chunk is dropped. Every other event is forwarded byte for byte; only events that
mention ``"usage"`` with a value are parsed.
"""

from __future__ import annotations

import json
from typing import Any


class UsageTap:
    def __init__(self, forward_usage_chunk: bool) -> None:
        self.forward_usage_chunk = forward_usage_chunk
        self.usage: dict[str, Any] | None = None
        self.done = False
        self._buffer = b""

    def feed(self, chunk: bytes) -> bytes:
        """Returns the bytes to forward now: whole events only. A partial event waits for the rest; one still
        partial when the backend's stream ends is never forwarded (a torn event would break the client's parser)."""
        self._buffer += chunk
        if b"\n\n" not in self._buffer and b"\r\n\r\n" not in self._buffer:
            return b""
        self._buffer = self._buffer.replace(b"\r\n", b"\n")
        *events, self._buffer = self._buffer.split(b"\n\n")
        out = bytearray()
        for event in events:
            if self._keep(event):
                out += event + b"\n\n"
        return bytes(out)

    def _keep(self, event: bytes) -> bool:
        if event.strip() == b"data: [DONE]":
            self.done = True
            return True
        if b'"usage"' not in event or b'"usage":null' in event or b'"usage": null' in event:
            return True
        data = b"".join(line[5:] for line in event.split(b"\n") if line.startswith(b"data:"))
        try:
            payload = json.loads(data)
        except ValueError:
            return True
        if isinstance(payload, dict) and isinstance(payload.get("usage"), dict):
            self.usage = payload["usage"]
            if not payload.get("choices") and not self.forward_usage_chunk:
                return False
        return True
