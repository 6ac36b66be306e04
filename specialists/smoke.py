"""One real chat completion per served name: does the server answer, and how fast.

Used by `triage specialists smoke` after `up`, and for the figures in docs/specialists.md. Plain httpx
(the router env has it; the backend env need not have the openai SDK).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx

DEFAULT_QUESTION = "What is 2+2?"


@dataclass(frozen=True)
class SmokeResult:
    model: str
    answer: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds > 0 else 0.0


def ask(base_url: str, model: str, question: str = DEFAULT_QUESTION, max_tokens: int = 64,
        timeout: float = 120.0) -> SmokeResult:
    """Greedy decoding, so a repeated run gives the same answer and a comparable speed."""
    body = {"model": model, "messages": [{"role": "user", "content": question}],
            "max_tokens": max_tokens, "temperature": 0}
    started = time.perf_counter()
    response = httpx.post(f"{base_url.rstrip('/')}/chat/completions", json=body, timeout=timeout)
    seconds = time.perf_counter() - started
    response.raise_for_status()
    data = response.json()
    usage = data.get("usage") or {}
    return SmokeResult(
        model=model,
        answer=data["choices"][0]["message"]["content"] or "",
        prompt_tokens=int(usage.get("prompt_tokens", 0)),
        completion_tokens=int(usage.get("completion_tokens", 0)),
        seconds=seconds,
    )
