"""Two real replicas of the local stand-in behind Triage (issue #25): the session's CPU vLLM server (replica 0)
and a second one started here (replica 1), each answering to the fleet's seven served names, so every backend
has ``replicas: [A, B]``. Their real ``/metrics`` are scraped; replica 1 is SIGKILLed while requests are in
flight, and no request is lost: the ones it held are retried on replica 0, which takes the traffic after.

    openai SDK (4 clients) -> Triage (real embedder, real artifact) -> vLLM A, vLLM B
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client import CollectorRegistry

from router.app import create_app
from router.artifact import Artifact
from router.embedding.torch import Embedder
from router.load import parse_vllm
from router.settings import load_settings
from tests.server import serve
from tests.vllm_server import LocalVLLM, start_local_vllm

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

CAPACITY = 2  # max_concurrency per replica: what Triage's waiting gauge measures the scraped load against
CLIENTS = 4
QUERIES = [
    "Janet has 3 apples and buys 5 more. How many apples does she have now?",
    "Write a Python function that reverses a linked list.",
    "Is a verbal contract binding in Germany?",
    "Translate 'good morning' into French.",
    "Prove that the square root of 2 is irrational.",
    "Explain the difference between TCP and UDP.",
    "What is the capital of Australia?",
    "Name three colours.",
]


@pytest.fixture(scope="module")
def replica_b(local_vllm: LocalVLLM, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalVLLM]:
    """A second server of the same stand-in (started after the session's one: one start at a time)."""
    server = start_local_vllm(tmp_path_factory.mktemp("vllm-replica-b"))
    try:
        yield server
    finally:
        server.stop()  # reaps it after the test's SIGKILL; stops it if the test failed before


@dataclass
class Reply:
    started: float
    replica: str = ""
    reason: str = ""
    text: str = ""
    error: str = ""


def sample_sum(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """A metric's samples summed over the label values not given (here: over the seven backends)."""
    return sum(s.value for metric in registry.collect() for s in metric.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def per_backend(registry: CollectorRegistry, name: str, backends: list[str], **labels: str) -> dict[str, float]:
    return {b: registry.get_sample_value(name, {"backend": b, **labels}) or 0.0 for b in backends}


def running(server: LocalVLLM) -> float:
    """Sequences the server itself says it is generating now (vLLM's gauge, summed over its served names, read as
    Triage's scrape reads it)."""
    scrape = parse_vllm(httpx.get(httpx.URL(server.base_url).copy_with(path="/metrics"), timeout=10).text, 0.0)
    assert scrape is not None, "the replica's /metrics has no vLLM gauges"
    return scrape.running


def wait_for(condition: Callable[[], bool], timeout: float, what: Callable[[], object]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout:.0f} s: {what()}"
        time.sleep(0.1)


def ask(sdk: openai.OpenAI, model: str, query: str, max_tokens: int) -> Reply:
    """One non-streamed chat completion; a failure is recorded, not raised (the batch reports them all)."""
    reply = Reply(started=time.monotonic())
    try:
        raw = sdk.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": query}], max_tokens=max_tokens,
            extra_body={"ignore_eos": True})  # every answer runs max_tokens: long enough to be caught in flight
        reply.replica, reply.reason = raw.headers["x-triage-replica"], raw.headers["x-triage-reason"]
        reply.text = raw.parse().choices[0].message.content or ""
    except openai.OpenAIError as exc:
        reply.error = repr(exc)
    return reply


def test_two_real_replicas_share_the_load_and_one_killed_mid_run_loses_no_request(
    artifact: Artifact, embedder: Embedder, local_vllm: LocalVLLM, replica_b: LocalVLLM, tmp_path: Path
) -> None:
    backends = list(artifact.models)
    config = {
        "artifact": str(artifact.path),
        "backends": [{"name": name, "replicas": [local_vllm.base_url, replica_b.base_url],
                      "model": local_vllm.backend_models[name], "max_concurrency": CAPACITY,
                      "role": "generalist" if name == artifact.generalist else "specialist",
                      "timeouts": {"connect": 2, "first_byte": 120, "total": 300}} for name in backends],
        "health": {"probe_interval_s": 1},
        "pool": {"scrape_interval_s": 0.5},
        "decision_log": {"path": str(tmp_path / "decisions.jsonl")},
    }
    (tmp_path / "triage.yaml").write_text(json.dumps(config))
    registry = CollectorRegistry()
    app = create_app(load_settings(tmp_path / "triage.yaml", environ={}), registry=registry, encoder=embedder)
    with serve(app) as base_url, ThreadPoolExecutor(CLIENTS) as clients:
        sdks = [openai.OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0, timeout=120)
                for _ in range(CLIENTS)]

        def waiting() -> dict[str, float]:
            return per_backend(registry, "triage_replica_waiting", backends, replica="0")

        def replica_up(label: str) -> dict[str, float]:
            return per_backend(registry, "triage_replica_up", backends, replica=label)

        def failed_b() -> float:
            return sample_sum(registry, "triage_replica_requests_total", replica="1", outcome="failed")

        # 1. Both replicas take traffic: a concurrent batch routed by Triage lands on each.
        replies = list(clients.map(lambda i: ask(sdks[i % CLIENTS], "triage", QUERIES[i % len(QUERIES)], 8),
                                   range(12), timeout=300))
        assert [r.error for r in replies if r.error] == []
        assert {r.replica for r in replies} == {"0", "1"}

        # 2. The real /metrics are scraped: four requests sent to replica 0 directly (another client, unseen
        # by Triage) show in Triage's waiting gauge, 4 running beyond a capacity of 2, for every backend; and
        # Triage sends its own requests to the other replica.
        with httpx.Client(base_url=local_vllm.base_url, timeout=60) as direct, contextlib.ExitStack() as held:
            for i in range(4):
                held.enter_context(direct.stream("POST", "/chat/completions", json={
                    "model": local_vllm.served_names[i], "messages": [{"role": "user", "content": QUERIES[i]}],
                    "max_tokens": 1500, "ignore_eos": True, "stream": True}))
            wait_for(lambda: set(waiting().values()) == {4.0 - CAPACITY}, 60, waiting)
            assert set(per_backend(registry, "triage_replica_in_flight", backends, replica="0").values()) == {0.0}
            steered = [ask(sdks[0], name, QUERIES[0], 4) for name in backends[:4]]
            assert [(r.error, r.replica) for r in steered] == [("", "1")] * 4
        wait_for(lambda: set(waiting().values()) == {0.0}, 60, waiting)  # closed streams: vLLM aborted them

        # 3. Replica 1 killed (SIGKILL, its whole process group: API server and engine) in the middle of a
        # batch of 24, while Triage has requests in flight on it.
        assert failed_b() == 0
        done = threading.Semaphore(0)

        def one(i: int) -> Reply:
            try:
                return ask(sdks[i % CLIENTS], "triage", QUERIES[i % len(QUERIES)], 32)
            finally:
                done.release()

        batch = [clients.submit(one, i) for i in range(24)]
        for _ in range(CLIENTS):  # a few answers first: the kill comes mid-run, not at the start
            assert done.acquire(timeout=300)
        # In flight by both counts: Triage has a call open on replica 1, and replica 1's own /metrics say it is
        # generating (Triage's count alone may still hold a call whose answer has already been sent).
        wait_for(lambda: sample_sum(registry, "triage_replica_in_flight", replica="1") >= 1
                 and running(replica_b) >= 1, 120, lambda: "no request in flight on replica 1")
        os.killpg(replica_b.server.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        replies = [future.result(timeout=600) for future in batch]

        assert [r.error for r in replies if r.error] == []  # no request lost
        assert all(r.text.strip() for r in replies)
        assert failed_b() >= 1  # the kill cut requests that were on replica 1: they were retried on replica 0
        after = [r for r in replies if r.started > killed_at]
        assert after and {r.replica for r in after} == {"0"}
        # Retried on the same model's other replica, never moved to another model.
        assert not {r.reason for r in replies} & {"fallback_after_error", "backend_down"}
        assert sample_sum(registry, "triage_requests_total", outcome="backend_error") == 0

        # The health probe takes the dead replica out of every backend; every backend stays up, and ready.
        wait_for(lambda: set(replica_up("1").values()) == {0.0}, 30, lambda: replica_up("1"))
        assert set(replica_up("0").values()) == {1.0}
        assert set(per_backend(registry, "triage_backend_up", backends).values()) == {1.0}
        assert httpx.get(base_url + "/ready", timeout=30).status_code == 200

        # 4. The survivor takes all the traffic: each backend pinned once, and a new stream.
        pinned = list(clients.map(lambda name: ask(sdks[0], name, QUERIES[1], 8), backends, timeout=300))
        assert [(r.error, r.replica) for r in pinned] == [("", "0")] * len(backends)
        with sdks[0].chat.completions.with_streaming_response.create(
                model="triage", messages=[{"role": "user", "content": "Name three colours."}], max_tokens=16,
                stream=True) as stream:
            assert stream.headers["x-triage-replica"] == "0"
            chunks = list(stream.parse())
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()
