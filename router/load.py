"""A replica's load, and the wait a new request would have there before a slot frees.

Two signals: Triage's own count of requests in flight (always), and, where the backend is vLLM, its
``/metrics`` gauges scraped about once a second (``vllm:num_requests_waiting``, ``vllm:num_requests_running``,
the KV-cache usage), which also count other clients' requests. A replica serves ``capacity`` sequences at a
time (``max_concurrency`` from the config, or, while vLLM is queueing, the number it runs); the rest wait.
With ``q`` requests ahead beyond capacity and a measured service time ``s`` per request, a new request waits
about ``(q + 1) / capacity * s`` (capacity slots freeing at ``capacity / s`` per second). Until the first
request has finished, ``s`` is the configured prior.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

EWMA = 0.2  # weight of the newest service time: recent enough to follow a change of load, smooth enough
STALE_S = 5.0  # a scrape older than this is ignored (the replica stopped answering /metrics)
KV_GAUGES = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")


@dataclass(frozen=True)
class Scrape:
    waiting: float
    running: float
    kv_cache: float | None
    at: float


def parse_vllm(text: str, at: float) -> Scrape | None:
    """vLLM's gauges from a ``/metrics`` page, summed over its label sets (one per served model); None when the
    page has none of them (not a vLLM server)."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in ("vllm:num_requests_waiting", "vllm:num_requests_running", *KV_GAUGES):
                found[sample.name] = found.get(sample.name, 0.0) + float(sample.value)
    if "vllm:num_requests_waiting" not in found:
        return None
    kv = next((found[k] for k in KV_GAUGES if k in found), None)
    return Scrape(found["vllm:num_requests_waiting"], found.get("vllm:num_requests_running", 0.0), kv, at)


class Load:
    def __init__(self, max_concurrency: int | None, service_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_concurrency = max_concurrency
        self.service_s = service_s
        self.scrape: Scrape | None = None
        self._clock = clock

    def observe(self, seconds: float) -> None:
        """A request finished after ``seconds`` on this replica."""
        self.service_s += EWMA * (seconds - self.service_s)

    def _fresh(self) -> Scrape | None:
        scrape = self.scrape
        return scrape if scrape is not None and self._clock() - scrape.at < STALE_S else None

    def outstanding(self, in_flight: int) -> float:
        """Requests on the replica: Triage's own, or vLLM's count when it knows of more (other clients)."""
        scrape = self._fresh()
        return max(float(in_flight), scrape.waiting + scrape.running if scrape else 0.0)

    def capacity(self) -> float:
        if self.max_concurrency is not None:
            return float(self.max_concurrency)
        scrape = self._fresh()
        if scrape is not None and scrape.waiting > 0 and scrape.running > 0:
            return scrape.running  # it queues: what it runs is what it can
        return math.inf

    def waiting(self, in_flight: int) -> float:
        return max(0.0, self.outstanding(in_flight) - self.capacity())

    def queue_seconds(self, in_flight: int) -> float:
        """The expected wait of one more request before it starts."""
        capacity = self.capacity()
        ahead = self.outstanding(in_flight) + 1 - capacity
        if ahead <= 0 or math.isinf(capacity):
            return 0.0
        return ahead / capacity * self.service_s
