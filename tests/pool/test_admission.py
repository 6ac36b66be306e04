"""Load-aware placement: spill-over only among eligible models, a bounded wait, then 429 with retry-after."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from prometheus_client import CollectorRegistry

from router.admission import Admission
from router.backends import BackendPool
from router.errors import RateLimited
from router.metrics import Metrics
from router.policy import Candidate, Decision
from router.settings import BackendSettings, HealthSettings, PoolSettings

MODELS = ["a", "b", "cliffed", "g"]


class Held:
    """Fake backends whose answers wait until released: requests stay in flight as long as a test needs."""

    def __init__(self) -> None:
        self.gates: dict[str, asyncio.Event] = {m: asyncio.Event() for m in MODELS}
        self.served: list[str] = []

    async def handle(self, request: httpx.Request) -> httpx.Response:
        name = request.url.host.split(".")[0]
        await self.gates[name].wait()
        self.served.append(name)
        return httpx.Response(200, json={"choices": [{"message": {"content": name}}]})


def decision(reason: str = "best", is_ood: bool = False) -> Decision:
    eligible = {"a": True, "b": True, "cliffed": False, "g": True}
    accuracy = {"a": 0.8, "b": 0.7, "cliffed": 0.9, "g": 0.6}
    ood = is_ood or reason in ("ood_fallback", "ood_margin")
    candidates = tuple(
        Candidate(m, accuracy[m], 0.0, accuracy[m], eligible[m] and not (ood and m != "g"),
                  None if eligible[m] and not (ood and m != "g") else ("ood" if ood else "cliff"))
        for m in (["g", "a", "b", "cliffed"] if ood else ["a", "b", "g", "cliffed"]))
    return Decision(model="g" if ood else "a", cluster=0, ood_score=2.0 if is_ood else 0.1, is_ood=is_ood,
                    knob=0.5, reason=reason, candidates=candidates, generalist="g")


def held_pool(held: Held, **pool: float) -> tuple[BackendPool, Metrics]:
    backends = [BackendSettings(name=m, base_url=f"http://{m}.test/v1", model=m, max_concurrency=1,
                                role="generalist" if m == "g" else "specialist") for m in MODELS]
    metrics = Metrics(CollectorRegistry())
    settings = PoolSettings(scrape_interval_s=0, **pool)
    return BackendPool(backends, HealthSettings(probe_interval_s=0), metrics,
                       lambda _: httpx.MockTransport(held.handle), pool=settings), metrics


async def occupy(pool: BackendPool, name: str) -> asyncio.Task[object]:
    task = asyncio.create_task(pool[name].post_json("/chat/completions", {"model": name}))
    for _ in range(100):
        if pool[name].replicas[0].in_flight:
            break
        await asyncio.sleep(0.001)
    return task


async def test_an_idle_pool_keeps_the_policys_choice() -> None:
    held = Held()
    pool, metrics = held_pool(held)
    for d, chain in ((decision(), ["a", "b", "g"]), (decision("ood_fallback", True), ["g"]),
                     (decision("cliff"), ["a", "g"])):
        placement = await pool.admission.place(d, chain, budget_ms=0)
        assert placement.chain == chain and not placement.spilled
    assert metrics.registry.get_sample_value("triage_spillover_total", {"from": "a", "to": "b"}) is None
    await pool.aclose()


async def test_a_busy_first_choice_spills_to_the_next_eligible_model_and_counts_what_it_gave_up() -> None:
    held = Held()
    pool, metrics = held_pool(held, service_s=1.0)
    busy = await occupy(pool, "a")
    assert pool["a"].queue_seconds() == 1.0  # one in flight on one slot: the next waits a whole service
    placement = await pool.admission.place(decision(), ["a", "b", "g"], budget_ms=500)
    assert placement.chain == ["b", "g"] and placement.preferred == "a"
    assert placement.accuracy_given_up == pytest.approx(0.1)
    sample = metrics.registry.get_sample_value
    assert sample("triage_spillover_total", {"from": "a", "to": "b"}) == 1
    assert sample("triage_spillover_accuracy_given_up_sum") == pytest.approx(0.1)
    assert (await pool.admission.place(decision(), ["a", "b", "g"], budget_ms=1000)).chain == ["a", "b", "g"]
    held.gates["a"].set()
    await busy
    await pool.aclose()


async def test_never_a_specialist_past_its_cliff_or_for_an_out_of_domain_query() -> None:
    held = Held()
    pool, metrics = held_pool(held, queue_timeout_s=0.05)
    tasks = [await occupy(pool, m) for m in ("a", "b", "g")]  # only the cliffed specialist is idle
    with pytest.raises(RateLimited) as info:
        await pool.admission.place(decision(), ["a", "b", "g"], budget_ms=100)
    assert info.value.status == 429 and info.value.headers["retry-after"] == "1"
    with pytest.raises(RateLimited):  # out of domain: a, b idle would not be asked either
        held.gates["a"].set()
        await tasks[0]
        await pool.admission.place(decision("ood_fallback", True), ["g"], budget_ms=100)
    assert metrics.registry.get_sample_value("triage_admission_rejected_total", {"reason": "timeout"}) == 2
    for name in ("b", "g"):
        held.gates[name].set()
    await asyncio.gather(*tasks)
    await pool.aclose()


async def test_a_waiting_request_takes_the_first_place_freed_and_the_queue_is_bounded() -> None:
    held = Held()
    pool, metrics = held_pool(held, queue_timeout_s=5, queue_size=1)
    tasks = [await occupy(pool, m) for m in ("a", "b", "g")]
    waiter = asyncio.create_task(pool.admission.place(decision(), ["a", "b", "g"], budget_ms=100))
    await asyncio.sleep(0.05)
    assert pool.admission.waiting == 1 and not waiter.done()
    with pytest.raises(RateLimited, match="queue is full"):  # a second one finds the queue full at once
        await pool.admission.place(decision(), ["a", "b", "g"], budget_ms=100)
    held.gates["b"].set()
    placement = await asyncio.wait_for(waiter, 2)
    assert placement.chain[0] == "b" and placement.spilled
    assert metrics.registry.get_sample_value("triage_admission_rejected_total", {"reason": "queue_full"}) == 1
    for name in ("a", "g"):
        held.gates[name].set()
    await asyncio.gather(*tasks)
    await pool.aclose()


def test_pool_settings_are_read_from_the_config(tmp_path: object) -> None:
    assert PoolSettings.model_validate(json.loads('{"max_queue_ms": 250, "queue_size": 8}')).max_queue_ms == 250
    with pytest.raises(ValueError):
        PoolSettings(queue_size=-1)


def test_admission_is_the_pools() -> None:
    held = Held()
    pool, _ = held_pool(held)
    assert isinstance(pool.admission, Admission)
