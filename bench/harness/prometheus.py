"""A real Prometheus server on loopback (Debian's ``prometheus`` binary), for tests and dashboard snapshots."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from bench.harness.fleet import free_port


class Prometheus:
    def __init__(self, url: str, config: Path, scrape_s: float) -> None:
        self.url = url
        self.config = config
        self.scrape_s = scrape_s

    def scrape(self, job: str, target: str) -> None:
        """Add a scrape target (host:port) and reload the configuration."""
        self.config.write_text(self.config.read_text() + (
            f"scrape_configs:\n  - job_name: {job}\n    static_configs: [{{targets: ['{target}']}}]\n"))
        response = httpx.post(self.url + "/-/reload", timeout=10)
        response.raise_for_status()

    def query(self, promql: str, at: float | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"query": promql}
        if at is not None:
            params["time"] = at
        return dict(httpx.get(self.url + "/api/v1/query", params=params, timeout=30).json())

    def query_range(self, promql: str, start: float, end: float, step: float) -> dict[str, Any]:
        params: dict[str, Any] = {"query": promql, "start": start, "end": end, "step": step}
        return dict(httpx.get(self.url + "/api/v1/query_range", params=params, timeout=30).json())



@contextmanager
def run_prometheus(workdir: Path, scrape_s: float = 1.0, timeout: float = 60.0) -> Iterator[Prometheus]:
    binary = shutil.which("prometheus")
    if binary is None:
        raise RuntimeError("Prometheus is not installed: apt-get install prometheus (scripts/test.sh does)")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = workdir / "prometheus.yml"
    config.write_text(f"global: {{scrape_interval: {scrape_s}s, evaluation_interval: {scrape_s}s}}\n")
    log_path = workdir / "prometheus.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}", "--web.enable-lifecycle"],
            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(url + "/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None:
                raise RuntimeError("Prometheus exited:\n" + log_path.read_text()[-2000:])
            if time.monotonic() > deadline:
                raise TimeoutError(f"Prometheus was not ready in {timeout} s")
            time.sleep(0.2)
        yield Prometheus(url, config, scrape_s)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def dashboard_queries(path: Path) -> list[tuple[str, str, str]]:
    """(panel title, legend, PromQL expression) for every target of a Grafana dashboard JSON."""
    import json

    panels = json.loads(path.read_text())["panels"]
    return [(p["title"], t.get("legendFormat", ""), t["expr"]) for p in panels for t in p.get("targets", [])
            if t.get("expr")]


def grafana_to_promql(expr: str, rate_interval: str = "1m", range_: str = "5m") -> str:
    """Grafana's built-in variables, replaced as Grafana would for a short time range."""
    return expr.replace("$__rate_interval", rate_interval).replace("$__range", range_)
