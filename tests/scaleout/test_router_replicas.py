"""Three ``triage serve`` replicas behind haproxy, sharing one redis-server, behave as one router.

Real parts throughout: the router processes (real embedding model), Debian's haproxy and redis-server, fake
OpenAI backends in their own processes, and the official ``openai`` client. The tests run in file order on one
cluster; the ones that stop Redis or kill a replica come last. Each prints what it measured.
"""

from __future__ import annotations

import hashlib
import json
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from bench.harness.fleet import FakeProcess, TriageProcess, fakes, fleet_config, metric_values
from bench.harness.synthetic import write_synthetic_artifact
from calibration.feedback import read_log
from router.artifact import Artifact
from tests.scaleout.parts import HAProxy, RedisServer, binary

pytestmark = pytest.mark.slow

MODELS = ["generalist-m", "specialist-a", "specialist-b"]
LIMITED, CLIENT, ADMIN = "sk-limited-scaleout-0001", "sk-client-scaleout-0001", "sk-admin-scaleout-00001"
METERED = "sk-metered-scaleout-0001"
QUESTION = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
            "How many clips did Natalia sell altogether in April and May?")


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass
class Cluster:
    balancer: HAProxy
    redis: RedisServer
    replicas: list[TriageProcess]
    backends: list[FakeProcess]
    artifact: Artifact
    logs: Path

    def records(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for path in sorted(self.logs.glob("*.jsonl")):
            out += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return out

    def client(self, key: str, **kw: Any) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.balancer.url + "/v1", api_key=key, **kw)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    binary("redis-server"), binary("haproxy")
    work = tmp_path_factory.mktemp("scaleout")
    artifact = write_synthetic_artifact(work / "artifact", k=8, models=MODELS, n_reference=600, ood_threshold=1.5)
    logs = work / "logs"
    redis = RedisServer(work / "redis").start()
    replicas: list[TriageProcess] = []
    balancer: HAProxy | None = None
    try:
        with fakes(MODELS, completion_tokens=8) as backends:
            for i in range(3):
                config = fleet_config(
                    str(artifact.path), MODELS, MODELS[0], [b.base_url for b in backends], MODELS,
                    health={"probe_interval_s": 0},
                    auth={"enabled": True, "keys": [
                        {"name": "limited", "sha256": sha(LIMITED), "requests_per_minute": 60},
                        {"name": "client", "sha256": sha(CLIENT)},
                        {"name": "metered", "sha256": sha(METERED), "requests_per_minute": 10_000,
                         "tokens_per_minute": 10_000_000},
                        {"name": "admin", "sha256": sha(ADMIN), "admin": True}]},
                    state={"redis_url": redis.url, "replica_id": f"r{i}", "retry_s": 0.2},
                    decision_log={"path": str(logs / "decisions-{replica}.jsonl")},
                )
                replicas.append(TriageProcess(config, work / f"replica{i}"))
            # Started side by side: each loads the embedding model, which is most of a replica's start.
            with ThreadPoolExecutor(3) as pool:
                list(pool.map(lambda r: r.start(timeout=300), replicas))
            balancer = HAProxy(work / "haproxy", [f"127.0.0.1:{r.port}" for r in replicas]).start()
            yield Cluster(balancer, redis, replicas, backends, artifact, logs)
    finally:
        if balancer is not None:
            balancer.stop()
        for replica in replicas:
            replica.stop()
        redis.stop()


def ask(client: openai.OpenAI, stream: bool = False) -> str:
    """One chat completion; the request id Triage gave it."""
    messages: Any = [{"role": "user", "content": QUESTION}]
    if stream:
        with client.chat.completions.with_streaming_response.create(
                model="triage", messages=messages, max_tokens=8, stream=True) as response:
            text = "".join(line for line in response.iter_lines())
            assert "[DONE]" in text
            return str(response.headers["x-request-id"])
    raw = client.chat.completions.with_raw_response.create(model="triage", messages=messages, max_tokens=8)
    assert raw.parse().choices[0].message.content
    return str(raw.headers["x-request-id"])


def test_a_60_per_minute_key_gets_exactly_60_answers(cluster: Cluster) -> None:
    client = cluster.client(LIMITED, max_retries=0)

    def one(_: int) -> int:
        try:
            ask(client)
            return 200
        except openai.RateLimitError as exc:
            assert 1 <= int(exc.response.headers["retry-after"]) <= 60
            return 429

    with ThreadPoolExecutor(12) as pool:
        codes = Counter(pool.map(one, range(90)))
    served_by = Counter(r["replica"] for r in cluster.records() if r.get("key") == "limited")
    print(f"\n60/min key, 90 requests through haproxy: {dict(codes)}; answers per replica {dict(served_by)}")
    assert codes == {200: 60, 429: 30}
    assert sorted(served_by) == ["r0", "r1", "r2"]  # the three replicas shared one limit


def test_feedback_through_the_balancer_is_recorded_every_time(cluster: Cluster) -> None:
    client = cluster.client(CLIENT)
    ids = [ask(client, stream=i % 2 == 1) for i in range(30)]
    with httpx.Client(base_url=cluster.balancer.url, headers={"authorization": f"Bearer {CLIENT}"},
                      timeout=30) as http:
        # Round robin would send feedback i to the replica that served request i (30 is a multiple of 3): one
        # call in between shifts every feedback to another replica than the one that served its request.
        assert http.get("/v1/models").status_code == 200
        answers = [http.post("/v1/feedback", json={"request_id": rid, "score": (i % 3) / 2})
                   for i, rid in enumerate(ids)]
        again = http.post("/v1/feedback", json={"request_id": ids[0], "score": 1.0})
    assert [a.status_code for a in answers] == [200] * 30
    assert again.status_code == 400  # once per request, whichever replica the replay reaches

    records = cluster.records()
    served = {r["request_id"]: r["replica"] for r in records if r["type"] == "decision"}
    scored = {r["request_id"]: r["replica"] for r in records if r["type"] == "feedback"}
    assert set(ids) <= set(scored)
    elsewhere = sum(served[rid] != scored[rid] for rid in ids)
    print(f"\nfeedback: 30 of 30 recorded through haproxy; {elsewhere} reached another replica than the one "
          "that served the request")
    assert elsewhere == 30
    # The replicas' logs merge: calibration joins every feedback to its decision across the files.
    observed = read_log(cluster.logs, MODELS)
    assert observed.joined >= 30


def redis_calls(url: str, field: str = "calls") -> Counter[str]:
    """Redis' own count of each command (``field="usec"``: the server time they took, in microseconds)."""
    import redis

    with redis.Redis.from_url(url) as client:
        stats = client.info("commandstats")
    return Counter({name.removeprefix("cmdstat_"): int(v[field]) for name, v in stats.items()})


def test_redis_work_per_request(cluster: Cluster) -> None:
    """What one request costs Redis, for a key with both limits, and what its feedback costs."""
    client = cluster.client(METERED)
    before, usec_before = redis_calls(cluster.redis.url), redis_calls(cluster.redis.url, "usec")
    ids = [ask(client) for _ in range(20)]
    mid = redis_calls(cluster.redis.url)
    with httpx.Client(base_url=cluster.balancer.url, headers={"authorization": f"Bearer {METERED}"}) as http:
        assert all(http.post("/v1/feedback", json={"request_id": rid, "score": 1.0}).status_code == 200
                   for rid in ids)
    time.sleep(0.5)  # settlements run as tasks after the answer
    after, usec = redis_calls(cluster.redis.url), redis_calls(cluster.redis.url, "usec") - usec_before
    per_request = {k: v / 20 for k, v in sorted((mid - before).items())}
    per_feedback = {k: v / 20 for k, v in sorted((after - mid).items())}
    # Top-level commands only: the commands a script runs are counted inside its EVALSHA time as well.
    server_us = sum(usec[c] for c in ("evalsha", "eval", "set", "get")) / 20
    print(f"\nRedis commands per request (both limits): {per_request}; per feedback: {per_feedback}; Redis "
          f"server time per request and its feedback: {server_us:.0f} us")
    # admit_request, reserve, settle (scripts), remember (SET); feedback: GET + SET NX (+ the request's own).
    assert per_request.get("evalsha", 0) + per_request.get("eval", 0) >= 3 and per_request["set"] >= 1


def test_a_rolling_artifact_reload_fails_no_request(cluster: Cluster) -> None:
    client = cluster.client(CLIENT, max_retries=0)
    done = threading.Event()
    failures: list[str] = []
    answered = 0

    def load() -> None:
        nonlocal answered
        while not done.is_set():
            try:
                ask(client, stream=answered % 2 == 1)
                answered += 1
            except Exception as exc:  # any failure during the reload is the test's failure
                failures.append(repr(exc))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for replica in cluster.replicas:  # one at a time, as a rollout would
            reloaded = httpx.post(replica.url + "/admin/reload", headers={"authorization": f"Bearer {ADMIN}"},
                                  timeout=60)
            assert reloaded.status_code == 200, reloaded.text
            time.sleep(0.5)
    finally:
        done.set()
        for thread in threads:
            thread.join(timeout=60)
    print(f"\nrolling reload over 3 replicas: {answered} answered, {len(failures)} failed")
    assert answered > 0 and failures == []


def test_redis_down_keeps_routing_and_shows_on_ready(cluster: Cluster) -> None:
    client = cluster.client(CLIENT, max_retries=0)

    def states() -> set[str]:
        return {httpx.get(r.url + "/ready", timeout=10).json()["shared_state"] for r in cluster.replicas}

    assert states() == {"redis"}
    cluster.redis.stop()
    for _ in range(6):  # every replica meets the dead Redis (round robin)
        ask(client)
    assert states() == {"degraded"}
    up = [metric_values(httpx.get(r.url + "/metrics", timeout=10).text, "triage_shared_state_up")
          for r in cluster.replicas]
    assert all(values == {"": 0.0} for values in up)

    cluster.redis.start()
    deadline = time.monotonic() + 20
    while states() != {"redis"}:
        assert time.monotonic() < deadline, "the replicas did not return to Redis"
        time.sleep(0.1)
    rid = ask(client)
    with httpx.Client(base_url=cluster.balancer.url, headers={"authorization": f"Bearer {CLIENT}"}) as http:
        codes = [http.post("/v1/feedback", json={"request_id": rid, "score": 1.0}).status_code for _ in range(3)]
    assert codes == [200, 400, 400]  # shared again: the record and the claim live in Redis


def test_one_replica_sigkilled_under_load(cluster: Cluster) -> None:
    """Bounded load (4 clients, 150 requests, half streaming); replica r2 is SIGKILLed after 40 answers.
    Every request sent after the kill is answered; the SDK's retries recover non-streaming requests that were
    in flight on the killed replica; streams cut by the kill are counted and reported."""
    client = cluster.client(CLIENT, max_retries=2)
    lock = threading.Lock()
    outcomes: list[tuple[float, bool, bool, float]] = []  # (sent at, stream, ok, finished at)
    killed_at: list[float] = []
    victim = cluster.replicas[2]

    def one(i: int) -> None:
        stream = i % 2 == 1
        sent = time.monotonic()
        try:
            ask(client, stream=stream)
            ok = True
        except Exception:  # counted and reported below
            ok = False
        with lock:
            outcomes.append((sent, stream, ok, time.monotonic()))
            if len(outcomes) == 40 and not killed_at:
                assert victim.proc is not None
                victim.proc.send_signal(signal.SIGKILL)  # our own process, by its pid
                killed_at.append(time.monotonic())

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, range(150)))
    assert killed_at and victim.proc is not None
    victim.proc.wait(timeout=10)
    victim.proc = None
    after = [o for o in outcomes if o[0] > killed_at[0]]
    during = [o for o in outcomes if o[0] <= killed_at[0]]
    in_flight = [o for o in during if o[3] > killed_at[0]]
    print(f"\nSIGKILL of 1 of 3 replicas under load: {len(outcomes)} requests, {len(after)} sent after the kill "
          f"({sum(o[2] for o in after)} answered); {len(in_flight)} in flight at the kill (on any replica): "
          f"{sum(1 for o in in_flight if o[1] and not o[2])} streams cut, "
          f"{sum(1 for o in in_flight if not o[1] and not o[2])} non-streaming failed after the SDK's retries")
    assert len(outcomes) == 150
    assert all(o[2] for o in after), [o for o in after if not o[2]]
    assert all(o[2] for o in during if not o[1])  # the SDK retried the non-streaming ones
