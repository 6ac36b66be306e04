"""What one request through Triage ended as, judged from the client's side, and the tally of a run.

The fake backends answer ``max_tokens`` tokens ``tok0 tok1 ...``, so a complete answer is checkable
exactly: the right text, a finish reason, usage when asked, and ``data: [DONE]`` last in a stream.

    ok                   a complete answer
    backend_error        502 code backend_error: every candidate failed (honest, counted apart)
    stream_error         an SSE error event (code backend_error) then [DONE]: failed after the first byte
    client_error         a 4xx in OpenAI's shape (none are expected from the load's valid requests)
    router_error         any other 5xx, or an error body not in OpenAI's shape: the router's own fault
    incomplete           200 but the answer is cut, wrong, or a stream ended without [DONE]
    timeout              no complete answer within the per-request timeout: a hang
    transport_error      the router's socket failed (refused, reset)
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

FAILURES = ("router_error", "incomplete", "timeout", "transport_error")
HONEST = ("backend_error", "stream_error")


def expected_text(max_tokens: int) -> str:
    return "".join(f"tok{i} " for i in range(max_tokens))


def is_openai_error(payload: Any) -> bool:
    if not isinstance(payload, dict) or not isinstance(payload.get("error"), dict):
        return False
    error = payload["error"]
    return set(error) == {"message", "type", "param", "code"} and isinstance(error["message"], str)


def judge_error(status: int, raw: bytes) -> str:
    try:
        payload = json.loads(raw)
    except ValueError:
        return "router_error"
    if not is_openai_error(payload):
        return "router_error"
    if status == 502 and payload["error"]["code"] == "backend_error":
        return "backend_error"
    if 400 <= status < 500:
        return "client_error"
    return "router_error"


def judge_json(raw: bytes, chat: bool, max_tokens: int) -> str:
    try:
        payload = json.loads(raw)
        choice = payload["choices"][0]
        text = choice["message"]["content"] if chat else choice["text"]
        usage_ok = payload["usage"]["completion_tokens"] == max_tokens
    except (ValueError, KeyError, IndexError, TypeError):
        return "incomplete"
    return "ok" if text == expected_text(max_tokens) and choice.get("finish_reason") and usage_ok else "incomplete"


def judge_stream(raw: bytes, chat: bool, max_tokens: int, include_usage: bool) -> str:
    events = [e for e in raw.replace(b"\r\n", b"\n").split(b"\n\n") if e.strip()]
    if not events or events[-1].strip() != b"data: [DONE]":
        return "incomplete"
    pieces: list[str] = []
    finished = usage_seen = False
    for event in events[:-1]:
        data = b"".join(line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:"))
        try:
            payload = json.loads(data)
        except ValueError:
            return "incomplete"
        if is_openai_error(payload):
            return "stream_error" if payload["error"]["code"] == "backend_error" else "router_error"
        if payload.get("usage"):
            usage_seen = True
        for choice in payload.get("choices") or []:
            pieces.append((choice.get("delta") or {}).get("content") or "" if chat else choice.get("text") or "")
            finished = finished or bool(choice.get("finish_reason"))
    if "".join(pieces) != expected_text(max_tokens) or not finished or usage_seen != include_usage:
        return "incomplete"
    return "ok"


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=1000, method="inclusive")[min(998, max(0, round(q * 1000) - 1))]


@dataclass
class Tally:
    outcomes: Counter[str] = field(default_factory=Counter)
    by_backend: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    latency: dict[str, list[float]] = field(default_factory=lambda: {"json": [], "ttft": [], "stream": []})
    examples: dict[str, str] = field(default_factory=dict)

    def add(self, outcome: str, detail: str = "") -> None:
        self.outcomes[outcome] += 1
        if outcome != "ok" and outcome not in self.examples:
            self.examples[outcome] = detail[:300]

    @property
    def total(self) -> int:
        return sum(self.outcomes.values())

    def failures(self) -> int:
        return sum(self.outcomes[name] for name in FAILURES)

    def latency_rows(self) -> list[tuple[str, int, float, float]]:
        labels = {"json": "non-streaming total", "ttft": "streaming first token", "stream": "streaming total"}
        return [(labels[key], len(values), percentile(values, 0.5) * 1000, percentile(values, 0.99) * 1000)
                for key, values in self.latency.items()]
