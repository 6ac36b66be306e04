"""A replica's load estimate: vLLM's gauges, Triage's own count, the expected wait."""

from __future__ import annotations

import pytest

from router.load import Load, parse_vllm

VLLM_PAGE = """# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="a"} 2.0
vllm:num_requests_running{engine="0",model_name="b"} 1.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="a"} 3.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="a"} 0.75
"""


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def test_vllm_gauges_are_read_and_summed_over_served_models() -> None:
    scrape = parse_vllm(VLLM_PAGE, at=1.0)
    assert scrape is not None
    assert (scrape.waiting, scrape.running, scrape.kv_cache) == (3.0, 3.0, 0.75)
    assert parse_vllm("# TYPE other gauge\nother 1\n", at=1.0) is None  # not a vLLM server


def test_the_wait_counts_requests_beyond_capacity_at_the_measured_service_time() -> None:
    load = Load(max_concurrency=2, service_s=1.0)
    assert [load.queue_seconds(n) for n in (0, 1)] == [0.0, 0.0]
    assert load.queue_seconds(2) == 0.5  # two running: the next waits for one of two slots, half a service
    assert load.queue_seconds(5) == 2.0 and load.waiting(5) == 3
    load.observe(3.0)
    assert load.service_s == pytest.approx(1.4)
    assert Load(max_concurrency=None, service_s=1.0).queue_seconds(50) == 0.0  # capacity unknown: no queue


def test_a_fresh_scrape_shows_other_clients_queue_and_a_stale_one_is_ignored() -> None:
    clock = Clock()
    load = Load(max_concurrency=None, service_s=2.0, clock=clock)
    load.scrape = parse_vllm(VLLM_PAGE, at=clock.now)
    # vLLM queues 3 behind 3 running (its capacity now): the next request has 4 ahead of a free slot.
    assert load.outstanding(1) == 6 and load.capacity() == 3
    assert load.queue_seconds(1) == pytest.approx(4 / 3 * 2.0)
    clock.now += 10
    assert load.queue_seconds(1) == 0.0 and load.outstanding(1) == 1
