"""The handle a reliability test drives: the served app's URL, its settings, registry and fake backends."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import httpx
from prometheus_client import CollectorRegistry

from bench.harness.fleet import FakeProcess
from router.artifact import Artifact
from router.settings import Settings

HEALTHY = {"fault": None, "fault_scope": "all", "latency_ms": 0, "tokens_per_s": 0, "completion_tokens": 16,
           "fault_after_tokens": 3}
MATH = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
        "How many clips did Natalia sell altogether in April and May?")


@dataclass
class Rig:
    url: str
    settings: Settings
    fakes: dict[str, FakeProcess]
    registry: CollectorRegistry
    artifact: Artifact

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        return self.registry.get_sample_value(name, labels or {}) or 0.0

    def chat(self, content: str = MATH, model: str = "triage", **extra: Any) -> httpx.Response:
        body = {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 8, **extra}
        return httpx.post(self.url + "/v1/chat/completions", json=body, timeout=60)

    def specialist_route(self) -> tuple[str, str]:
        """(model, backend): a virtual model whose first choice for MATH is a specialist, not the generalist."""
        for model in ("triage", "triage:quality", "triage:cost", "triage:0.25", "triage:0.75"):
            backend = self.first_choice(model=model)
            if backend != self.artifact.generalist:
                return model, backend
        raise AssertionError("every knob routes MATH to the generalist: this artifact cannot test a specialist")

    def first_choice(self, content: str = MATH, model: str = "triage") -> str:
        """The backend a routed request goes to first (a dry run through /v1/route)."""
        response = httpx.post(self.url + "/v1/route", json={
            "model": model, "messages": [{"role": "user", "content": content}]}, timeout=60)
        response.raise_for_status()
        backend: str = response.json()["backend"]
        return backend


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "the condition") -> None:
    """Polls generously: the assertion is that it happens, not how fast (CI machines are loaded)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


RigFactory = Callable[..., AbstractContextManager[Rig]]
