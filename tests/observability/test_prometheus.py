"""A real Prometheus scrapes a running Triage; every query of the Grafana dashboard must return data.

Traffic covers what the panels show: routed requests, an out-of-domain query, a pinned request, a backend
error with a fallback, streaming, and feedback. Backends are fakes; the router, its embedder, its artifact and
Prometheus are real.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from router.app import create_app
from router.artifact import Artifact
from router.embedder import Embedder
from tests.fakes import FakeBackend, fleet_config
from tests.server import serve

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboards" / "triage.json"
SCRAPE_S = 1
MATH = "Natalia sold clips to 48 of her friends in April, and then half as many in May. How many in total?"
OOD = "Plan a three-day honeymoon itinerary in Lisbon with restaurants and a sunset boat tour."


def dashboard_queries() -> list[tuple[str, str]]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [(p["title"], t["expr"]) for p in panels for t in p.get("targets", []) if t.get("expr")]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """Yields (Prometheus URL, its config path); the test writes the scrape target before reloading it."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("Prometheus is not installed (scripts/test.sh installs Debian's 'prometheus')")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(f"global: {{scrape_interval: {SCRAPE_S}s, evaluation_interval: {SCRAPE_S}s}}\n")
    log = (tmp_path / "prometheus.log").open("w")
    process = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}", "--web.enable-lifecycle"],
        stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "Prometheus did not become ready in 60 s"
            time.sleep(0.2)
        yield url, config
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()


def scraped_samples(prom_url: str) -> int:
    result = httpx.get(prom_url + "/api/v1/query", params={"query": "count(triage_requests_total)"}).json()
    return len(result["data"]["result"])


def test_every_dashboard_query_returns_data_from_a_real_prometheus(
    prometheus: tuple[str, Path], artifact: Artifact, embedder: Embedder, tmp_path: Path
) -> None:
    prom_url, prom_config = prometheus
    settings = fleet_config(artifact, tmp_path)
    fakes = {b.name: FakeBackend(b.model) for b in settings.backends}
    app = create_app(settings, encoder=embedder, transport_for=lambda b: fakes[b.name].transport())
    with serve(app) as base_url:
        target = base_url.removeprefix("http://")
        prom_config.write_text(prom_config.read_text() + (
            f"scrape_configs:\n  - job_name: triage\n    static_configs: [{{targets: ['{target}']}}]\n"))
        assert httpx.post(prom_url + "/-/reload").status_code == 200
        client = openai.OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0)

        def traffic(round_: int) -> None:
            for knob in ("triage:quality", "triage:cost", "triage"):
                raw = client.chat.completions.with_raw_response.create(
                    model=knob, messages=[{"role": "user", "content": f"{MATH} (round {round_})"}])
                httpx.post(base_url + "/v1/feedback", json={"request_id": raw.headers["x-request-id"], "score": 1})
            client.chat.completions.create(model="triage", messages=[{"role": "user", "content": OOD}])
            list(client.chat.completions.create(model="triage", stream=True,
                                                messages=[{"role": "user", "content": MATH}]))
            client.chat.completions.create(model=artifact.generalist, messages=[{"role": "user", "content": "hi"}])
            # A backend error: the routed choice fails, the next eligible answers.
            chosen = httpx.post(base_url + "/v1/route", json={
                "model": "triage:quality", "messages": [{"role": "user", "content": MATH}]}).json()["backend"]
            fakes[chosen].fault = "500"
            client.chat.completions.create(model="triage:quality", messages=[{"role": "user", "content": MATH}])
            fakes[chosen].fault = None

        # Rates need two scrapes with traffic between them.
        traffic(1)
        deadline = time.monotonic() + 30
        while scraped_samples(prom_url) == 0:
            assert time.monotonic() < deadline, "Prometheus never scraped Triage"
            time.sleep(0.5)
        time.sleep(2 * SCRAPE_S)
        traffic(2)
        time.sleep(3 * SCRAPE_S)

        empty = []
        for title, expr in dashboard_queries():
            query = expr.replace("$__rate_interval", "1m").replace("$__range", "5m")
            answer = httpx.get(prom_url + "/api/v1/query", params={"query": query}).json()
            assert answer["status"] == "success", f"{title}: {answer.get('error')}"
            if not answer["data"]["result"]:
                empty.append(f"{title}: {expr}")
        assert not empty, "dashboard queries without data:\n" + "\n".join(empty)

        up = httpx.get(prom_url + "/api/v1/query", params={"query": "up{job='triage'}"}).json()
        assert up["data"]["result"][0]["value"][1] == "1"
