"""The live pool bench's parts: the fake vLLM replica (slots, FIFO queue, vLLM's /metrics as the router reads
them) and bench.pool_live end to end on tiny counts."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from bench.harness.fake_vllm import FakeVLLM, ReplicaConfig
from bench.pool_live import main as pool_live
from bench.pool_live import nearest_rank, tokens_for
from router.artifact import Artifact
from router.load import parse_vllm


async def started(config: ReplicaConfig) -> AsyncIterator[httpx.AsyncClient]:
    server = FakeVLLM(config)
    port = await server.start()
    serving = asyncio.create_task(server.serve_forever())
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            yield client
    finally:
        await asyncio.sleep(0.05)  # the connections' EOF reaches their handlers before the loop closes
        serving.cancel()
        await asyncio.wait({serving})


async def first_token_after(client: httpx.AsyncClient, tokens: int) -> tuple[float, str]:
    """Seconds to the first content chunk of a streamed chat request, and the last data line."""
    sent = time.monotonic()
    first, last = math.inf, ""
    async with client.stream("POST", "/v1/chat/completions", json={
            "model": "m", "messages": [{"role": "user", "content": "two words"}], "stream": True,
            "max_tokens": tokens, "stream_options": {"include_usage": True}}) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                if math.isinf(first) and '"content": "tok' in line:
                    first = time.monotonic() - sent
                last = line if line != "data: [DONE]" else last
    return first, last


async def test_a_replica_serves_its_slots_and_queues_the_rest_first_come_first_served() -> None:
    config = ReplicaConfig(slots=2, tokens_per_s=20, prefill_s=0.0, stream_interval_s=0.05)
    async for client in started(config):
        # 10 tokens at 20/s: each request holds its slot for ~0.45 s (first token at once, 9 more)
        tasks = [asyncio.create_task(first_token_after(client, 10)) for _ in range(4)]
        await asyncio.sleep(0.15)
        scrape = parse_vllm((await client.get("/metrics")).text, at=0.0)  # the router's own parser
        assert scrape is not None and (scrape.running, scrape.waiting) == (2, 2)
        assert scrape.kv_cache is not None and 0 < scrape.kv_cache < 1
        results = await asyncio.gather(*tasks)
        firsts = sorted(first for first, _ in results)
        assert firsts[1] < 0.2 and firsts[2] > 0.4  # two at once, two after a slot freed
        usage = json.loads(results[0][1].removeprefix("data: "))["usage"]
        assert usage["completion_tokens"] == 10 and usage["prompt_tokens"] == 2
        stats = (await client.get("/fake/stats")).json()
        assert stats["finished"] == 4 and stats["max_waiting"] == 2
        assert stats["busy_slot_s"] == pytest.approx(4 * 0.45, abs=0.25)


async def test_a_client_that_leaves_the_queue_gives_its_place_up() -> None:
    async for client in started(ReplicaConfig(slots=1, tokens_per_s=5, prefill_s=0.0, stream_interval_s=0.05)):
        holder = asyncio.create_task(first_token_after(client, 5))  # holds the slot for 0.8 s
        await asyncio.sleep(0.1)
        with pytest.raises(httpx.ReadTimeout):  # queued behind the holder; leaves before its first token
            async with httpx.AsyncClient(base_url=client.base_url, timeout=0.2) as impatient:
                await first_token_after(impatient, 5)
        await asyncio.sleep(0.1)
        text = (await client.get("/metrics")).text
        scrape = parse_vllm(text, at=0.0)
        assert scrape is not None and scrape.waiting == 0 and scrape.running == 1
        await holder
        stats = (await client.get("/fake/stats")).json()
        assert stats["aborted"] == 1 and stats["finished"] == 1
        assert 'vllm:request_success_total{engine="0",model_name="fake-model",finished_reason="length"} 1.0' in (
            await client.get("/metrics")).text


async def test_a_replica_answers_health_models_and_whole_completions() -> None:
    async for client in started(ReplicaConfig(served_name="served-3", tokens_per_s=1000, prefill_s=0.0)):
        assert (await client.get("/health")).status_code == 200
        assert [m["id"] for m in (await client.get("/v1/models")).json()["data"]] == ["served-3"]
        body = (await client.post("/v1/chat/completions", json={
            "model": "served-3", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3})).json()
        assert body["model"] == "served-3" and body["usage"]["completion_tokens"] == 3
        assert body["choices"][0]["message"]["content"] == "tok0 tok1 tok2 "


def test_a_query_meets_the_same_work_under_every_strategy() -> None:
    lengths = [tokens_for(f"query {i}", 40) for i in range(2000)]
    assert lengths[:50] == [tokens_for(f"query {i}", 40) for i in range(50)]  # a function of the text alone
    assert sum(lengths) / len(lengths) == pytest.approx(40, rel=0.05) and len(set(lengths)) > 20


def test_a_percentile_counts_requests_that_never_got_a_first_token() -> None:
    assert nearest_rank([0.1] * 98 + [math.inf] * 2, 99) == math.inf
    assert nearest_rank([float(i) for i in range(1, 101)], 50) == 50.0


@pytest.mark.slow
def test_pool_live_runs_end_to_end_on_tiny_counts(artifact: Artifact, shared_data: Path, tmp_path: Path) -> None:
    assert artifact.path is not None
    data = shared_data / "routing" / "routerdc_7model.jsonl"
    code = pool_live(["--artifact", str(artifact.path), "--data", str(data),
                      "--sample", "16", "--loads", "0.5", "--duration-s", "2", "--strategies",
                      "load-aware,round-robin", "--plan-gpus", "8", "--slots", "2", "--tokens-per-s", "100",
                      "--mean-tokens", "10", "--client-timeout-s", "5", "--out", str(tmp_path)])
    assert code == 0
    result = json.loads((tmp_path / "pool_live.json").read_text())
    runs = {r["strategy"]: r for r in result["runs"]}
    # triage plan's split for the first-token budget runs too when it needs at most --plan-budget-max fakes
    # (whether it does depends on the sample's shares).
    assert {"load-aware", "round-robin", "quality, plan of 8"} <= set(runs) <= {
        "load-aware", "round-robin", "quality, plan of 8", "quality, plan for budget"}
    if "quality, plan for budget" in runs:
        budget = runs["quality, plan for budget"]
        assert sum(budget["plan"].values()) == budget["replicas"] <= 16
    for run in runs.values():
        assert run["errors"] == 0 and run["gave_up"] == 0
        assert run["answered"] + run["refused"] == run["requests"] > 0
        assert 0 <= run["accuracy"] <= 1 and run["ttft_p99"] < 5
        assert sum(run["answered_by"].values()) == run["answered"]
    assert runs["load-aware"]["via"] == "triage" and runs["round-robin"]["via"] == "direct to the fakes"
    assert set(runs["round-robin"]["answered_by"]) <= set(artifact.models)
    assert sum(runs["quality, plan of 8"]["plan"].values()) == 8 and runs["quality, plan of 8"]["replicas"] == 8
    assert (tmp_path / "pool_live.png").stat().st_size > 10_000
