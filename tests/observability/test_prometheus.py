"""A real Prometheus scrapes a running Triage; every query of the Grafana dashboard must return data.

Traffic covers what the panels show: routed requests, an out-of-domain query, a pinned request, a backend
error with a fallback, streaming, and feedback. Backends are fakes; the router, its embedder, its artifact and
Prometheus are real.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from bench.harness.prometheus import Prometheus, dashboard_queries, grafana_to_promql, run_prometheus
from router.app import create_app
from router.artifact import Artifact
from router.embedding.torch import Embedder
from tests.fakes import FakeBackend, fleet_config
from tests.server import serve

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboards" / "triage.json"
SCRAPE_S = 1
MATH = "Natalia sold clips to 48 of her friends in April, and then half as many in May. How many in total?"
OOD = "Plan a three-day honeymoon itinerary in Lisbon with restaurants and a sunset boat tour."


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Prometheus]:
    if shutil.which("prometheus") is None:
        pytest.fail("Prometheus is not installed (scripts/test.sh installs Debian's 'prometheus')")
    with run_prometheus(tmp_path / "prometheus", scrape_s=SCRAPE_S) as server:
        yield server


def scraped_samples(prometheus: Prometheus) -> int:
    return len(prometheus.query("count(triage_requests_total)")["data"]["result"])


def test_every_dashboard_query_returns_data_from_a_real_prometheus(
    prometheus: Prometheus, artifact: Artifact, embedder: Embedder, tmp_path: Path
) -> None:
    settings = fleet_config(artifact, tmp_path)
    fakes = {b.name: FakeBackend(b.model) for b in settings.backends}
    app = create_app(settings, encoder=embedder, transport_for=lambda b: fakes[b.name].transport())
    with serve(app) as base_url:
        prometheus.scrape("triage", base_url.removeprefix("http://"))
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
        while scraped_samples(prometheus) == 0:
            assert time.monotonic() < deadline, "Prometheus never scraped Triage"
            time.sleep(0.5)
        time.sleep(2 * SCRAPE_S)
        traffic(2)
        time.sleep(3 * SCRAPE_S)

        empty = []
        for title, _legend, expr in dashboard_queries(DASHBOARD):
            answer = prometheus.query(grafana_to_promql(expr))
            assert answer["status"] == "success", f"{title}: {answer.get('error')}"
            if not answer["data"]["result"]:
                empty.append(f"{title}: {expr}")
        assert not empty, "dashboard queries without data:\n" + "\n".join(empty)

        up = prometheus.query("up{job='triage'}")
        assert up["data"]["result"][0]["value"][1] == "1"
