"""Server-sent events passing through Triage: read the usage, forward the bytes untouched.

Triage always asks the backend for usage in streams (to account cost); if the client did not ask for it,
the usage-only final chunk is dropped. Every other event is forwarded byte for byte; only events that
mention ``"usage"`` with a value are parsed. A Responses API stream (``event: response.*``) carries its usage in
``response.completed`` and has no ``[DONE]``: that event ends it, and ``response.created`` names the response.
"""

from __future__ import annotations

import json
import re
from typing import Any

# An event that carries generated text: a non-empty delta content (chat) or text (completions). vLLM sends one
# token per such event, so counting them estimates what a stream dropped before its usage chunk had relayed.
_TEXT = re.compile(rb'"(?:content|text|delta)":\s*"[^"]')
_RESPONSE_END = (b"event: response.completed", b"event: response.failed", b"event: response.incomplete")


def usage_of(usage: Any) -> dict[str, Any] | None:
    """Usage in the chat/completions names; the Responses API says input_tokens and output_tokens."""
    if not isinstance(usage, dict):
        return None
    if "input_tokens" in usage and "prompt_tokens" not in usage:
        prompt, completion = int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    return usage


# A JSON "model" member: the backend's own model id (vLLM may name its first served name whatever was asked for).
_MODEL = re.compile(rb'"model":\s*"(?:[^"\\]|\\.)*"')


class UsageTap:
    """``model=(served, shown)`` rewrites the ``model`` member of every event to the backend name the caller sees in
    ``x-triage-backend`` and ``/v1/models``, whatever model id the backend put there."""

    def __init__(self, forward_usage_chunk: bool, model: tuple[str, str] | None = None) -> None:
        self.forward_usage_chunk = forward_usage_chunk
        self._model = b'"model":' + json.dumps(model[1]).encode() if model is not None else None
        self.usage: dict[str, Any] | None = None
        self.done = False
        self.response_id: str | None = None  # a Responses API stream's response id, from response.created
        self.relayed = 0  # events with generated text forwarded so far
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
                if _TEXT.search(event):
                    self.relayed += 1
                if self._model is not None and b'"model"' in event:
                    event = _MODEL.sub(lambda _: self._model or b"", event)
                out += event + b"\n\n"
        return bytes(out)

    def _keep(self, event: bytes) -> bool:
        if event.strip() == b"data: [DONE]":
            self.done = True
            return True
        if event.startswith(b"event: response."):
            self._response_event(event)
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

    def _response_event(self, event: bytes) -> None:
        ends = event.startswith(_RESPONSE_END)
        if not ends and not event.startswith(b"event: response.created"):
            return
        data = b"".join(line[5:] for line in event.split(b"\n") if line.startswith(b"data:"))
        try:
            response = json.loads(data).get("response") or {}
        except (ValueError, AttributeError):
            return
        if isinstance(response.get("id"), str) and self.response_id is None:
            self.response_id = response["id"]
        if ends:
            self.usage = usage_of(response.get("usage"))
            self.done = True

    def relayed_usage(self, prompt_tokens: int) -> dict[str, int]:
        """Usage for a stream that ended without its usage chunk: the prompt (estimated by the caller) and one
        completion token per text event relayed."""
        return {"prompt_tokens": prompt_tokens, "completion_tokens": self.relayed,
                "total_tokens": prompt_tokens + self.relayed}
