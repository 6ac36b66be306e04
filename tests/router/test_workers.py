"""``triage serve --workers N``: N processes answer on one port, share their state through Redis and their metrics
through prometheus-client's multiprocess files, are replaced one by one on SIGHUP or ``POST /admin/reload``, and
stop with the supervisor; without Redis it refuses to start.

The real thing throughout: ``triage serve`` as a subprocess (uvicorn's supervisor, spawned workers), Debian's
redis-server, fake OpenAI backends and the fake embedding service (bench/harness), each started here and stopped
by its pid. The embedder is the remote one on the fake service, so a worker loads no model.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench.harness.fake_embeddings import FakeEmbeddingsProcess
from bench.harness.fleet import ROOT, fakes, fleet_config, free_port, wait_healthy
from bench.harness.synthetic import write_synthetic_artifact
from router.cli import main
from tests.scaleout.parts import RedisServer

MODELS = ["generalist-m", "specialist-a", "specialist-b"]


def workers_of(pid: int) -> set[int]:
    """The worker processes of the supervisor ``pid``: its children that multiprocessing spawned (not its
    resource tracker), from /proc (Linux)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(FileNotFoundError):
            found |= {int(p) for p in (task / "children").read_text().split()}
    return {child for child in found if b"spawn_main" in _cmdline(child)}


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return b""


def alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status  # a zombie has exited


def scraped(url: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """One ``/metrics`` scrape (a new connection: any worker may answer): ``name``'s samples summed per label set,
    the labels other than backend, replica and pid (a per-worker copy would carry one) dropped."""
    text = httpx.get(url + "/metrics", headers={"connection": "close"}, timeout=30).text
    found: dict[tuple[tuple[str, str], ...], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                key = tuple(sorted((k, v) for k, v in sample.labels.items() if k in ("backend", "replica", "pid")))
                found[key] = found.get(key, 0.0) + sample.value
    return found


def write_config(tmp_path: Path, backend_urls: list[str], service_url: str, **extra: Any) -> Path:
    artifact = write_synthetic_artifact(tmp_path / "artifact", k=4, models=MODELS, n_reference=300,
                                        ood_threshold=1.5)
    config = fleet_config(
        str(artifact.path), MODELS, MODELS[0], backend_urls, MODELS, health={"probe_interval_s": 0},
        embedder={"backend": "remote", "url": service_url, "model": "all-MiniLM-L6-v2", "remote_fallback": "none"},
        **extra)
    path = tmp_path / "triage.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


@pytest.fixture
def config_file(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A config for two workers and its decision-log directory (the fakes and Redis live for the test)."""
    logs = tmp_path / "logs"
    redis = RedisServer(tmp_path / "redis").start()
    service = FakeEmbeddingsProcess().start()
    try:
        with fakes(MODELS, completion_tokens=4) as backends:
            yield write_config(tmp_path, [b.base_url for b in backends], service.base_url,
                               # a Redis call slower than timeout_s degrades a worker to its own memory: on a
                               # crowded test machine 0.25 s (the default) is not enough
                               state={"redis_url": redis.url, "timeout_s": 5},
                               decision_log={"path": str(logs / "{replica}.jsonl")}), logs
    finally:
        service.kill()
        redis.stop()


def test_two_workers_answer_on_one_port_share_feedback_and_restart_on_sighup(config_file: tuple[Path, Path],
                                                                            tmp_path: Path) -> None:
    path, logs = config_file
    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        server = subprocess.Popen([sys.executable, "-m", "router.cli", "serve", "--config", str(path), "--port",
                                   str(port), "--workers", "2", "--log-level", "warning"],
                                  cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    workers: set[int] = set()
    try:
        wait_healthy(server, url + "/health", "triage serve --workers 2", log, timeout=120, interval=0.25)
        deadline = time.monotonic() + 60
        while len(workers_of(server.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        workers = workers_of(server.pid)
        assert len(workers) == 2
        for _ in range(20):  # both workers must be up, not only the first one that answered /health
            with httpx.Client() as probe:
                if all(probe.get(url + "/ready").status_code == 200 for _ in range(6)):
                    break
            time.sleep(0.5)

        def ask(i: int) -> str:
            # A connection per request: the kernel hands each new connection to whichever worker accepts first.
            response = httpx.post(url + "/v1/chat/completions", timeout=30, headers={"connection": "close"},
                                  json={"model": "triage", "messages": [{"role": "user", "content": f"question {i}"}]})
            assert response.status_code == 200, response.text
            return response.headers["x-request-id"]

        with ThreadPoolExecutor(8) as pool:
            request_ids = list(pool.map(ask, range(80)))
        records = [json.loads(line) for file in logs.glob("*.jsonl") for line in file.read_text().splitlines()]
        served = Counter(r["replica"] for r in records if r["type"] == "decision")
        assert sum(served.values()) == 80
        # Each worker names itself <host>:<port>-<pid> and writes its own file: both of ours decided some.
        assert {int(name.rsplit("-", 1)[1]) for name in served} == workers, served
        assert len(list(logs.glob("*.jsonl"))) == 2
        print("decisions per worker:", dict(served))

        # Feedback reaches a worker at random; the request records are in Redis, so every one is found.
        def rate(request_id: str) -> str:
            response = httpx.post(url + "/v1/feedback", json={"request_id": request_id, "score": 1.0},
                                  headers={"connection": "close"}, timeout=30)
            return "ok" if response.status_code == 200 else f"{response.status_code} {response.text}"

        with ThreadPoolExecutor(8) as pool:
            assert Counter(pool.map(rate, request_ids)) == {"ok": 80}

        # /metrics is every worker's, whichever one answers: the 80 requests in each scrape, one series per label
        # set (no per-worker copies), nothing left in flight.
        for _ in range(6):
            requests = scraped(url, "triage_requests_total")
            assert sum(requests.values()) == 80 and not any("pid" in dict(key) for key in requests), requests
            in_flight = scraped(url, "triage_replica_in_flight")
            assert len(in_flight) == len(MODELS) and set(in_flight.values()) == {0.0}, in_flight

        # POST /admin/reload to one worker (it checks the artifact, then asks the supervisor), then SIGHUP to the
        # supervisor: each replaces the workers one at a time (each new one loads the artifact first).
        def replaced(trigger: Callable[[], None], what: str) -> None:
            nonlocal workers
            before = workers_of(server.pid)
            trigger()
            deadline = time.monotonic() + 90
            while not (len(workers_of(server.pid)) == 2 and workers_of(server.pid).isdisjoint(before)):
                assert time.monotonic() < deadline, f"the workers were not replaced after {what}"
                time.sleep(0.2)
            workers |= workers_of(server.pid)

        def reload() -> None:
            response = httpx.post(url + "/admin/reload", timeout=30)
            assert response.status_code == 200 and "replacing every worker" in response.json()["workers"]

        replaced(reload, "POST /admin/reload")
        replaced(lambda: server.send_signal(signal.SIGHUP), "SIGHUP")
        assert ask(80)
        # The counters of the four workers gone are still in the sums; the gauges are the two live workers' only.
        for _ in range(4):
            assert sum(scraped(url, "triage_requests_total").values()) == 81
            assert len(scraped(url, "triage_replica_in_flight")) == len(MODELS)
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)  # the supervisor stops its workers, then itself
            try:
                server.wait(timeout=40)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=10)
        for pid in workers:  # only if the supervisor failed to: our own workers, by pid
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert server.returncode == 0, log.read_text()[-2000:]
    assert not any(alive(pid) for pid in workers)


def test_workers_without_redis_or_with_one_log_file_are_refused(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    urls = ["http://127.0.0.1:9/v1"] * len(MODELS)  # never called: serve refuses before it starts anything
    path = write_config(tmp_path, urls, "http://127.0.0.1:9/v1", decision_log={"path": "logs/{replica}.jsonl"})
    assert main(["serve", "--config", str(path), "--workers", "2"]) == 2
    assert "needs state.redis_url" in capsys.readouterr().err
    path = write_config(tmp_path, urls, "http://127.0.0.1:9/v1", state={"redis_url": "redis://127.0.0.1:9/0"},
                        decision_log={"path": "one-file.jsonl"})
    assert main(["serve", "--config", str(path), "--workers", "2"]) == 2
    assert "{replica}" in capsys.readouterr().err


def test_a_worker_that_fails_to_start_stops_the_supervisor(tmp_path: Path) -> None:
    # The embedding service is not there: each worker's lifespan fails (its dimension probe) and uvicorn's
    # supervisor stops instead of restarting workers forever.
    dead = "http://127.0.0.1:9/v1"
    path = write_config(tmp_path, [dead] * len(MODELS), dead, state={"redis_url": "redis://127.0.0.1:9/0"})
    server = subprocess.Popen([sys.executable, "-m", "router.cli", "serve", "--config", str(path), "--port",
                               str(free_port()), "--workers", "2", "--log-level", "warning"],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _, err = server.communicate(timeout=120)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=10)
    assert server.returncode == 3 and "failed to start, stopping the parent process" in err
