"""Processes for benches and reliability tests: fake backends and a Triage server, all on 127.0.0.1.

Every process is started by us, tracked by its pid, and stopped by that pid (never by name). A fake backend
can be SIGKILLed and brought back on the same port, which is how the load test takes a backend away.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]  # the checkout
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """The first stdout line of ``proc`` within ``timeout`` seconds (the child prints its port there)."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise TimeoutError("the child process printed nothing in time")
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"the child process exited with {proc.wait()}")
    return line.strip()


@dataclass
class FakeProcess:
    """One ``python -m bench.harness.fake_openai`` process (or ``module``: another fake with the same options)."""

    served_name: str
    options: dict[str, Any] = field(default_factory=dict)
    port: int = 0
    proc: subprocess.Popen[str] | None = None
    module: str = "bench.harness.fake_openai"

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.root_url + "/v1"

    def start(self, timeout: float = 30.0) -> FakeProcess:
        args = [PYTHON, "-m", self.module, "--port", str(self.port), "--served-name", self.served_name]
        for key, value in self.options.items():
            args += [f"--{key.replace('_', '-')}", str(value)]
        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        try:
            line = _read_line(self.proc, timeout)
        except BaseException:
            self.kill()
            raise
        self.port = int(line.rsplit(":", 1)[1])
        return self

    def kill(self) -> None:
        """SIGKILL: the kernel resets its open connections, as when a machine or a container dies."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None

    def restart(self) -> FakeProcess:
        """Back on the same port (the router's config still points there)."""
        self.kill()
        deadline = time.monotonic() + 15
        while True:
            try:
                return self.start()
            except RuntimeError:  # the port may linger for a moment after the kill
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def configure(self, **changes: Any) -> dict[str, Any]:
        response = httpx.post(self.root_url + "/fake/config", json=changes, timeout=10)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def stats(self) -> dict[str, Any]:
        response = httpx.get(self.root_url + "/fake/stats", timeout=10)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result


@contextlib.contextmanager
def fakes(names: Sequence[str], served: Sequence[str] | None = None, **options: Any) -> Iterator[list[FakeProcess]]:
    """One fake per name (served model ``served[i]``, default the name); all killed on exit."""
    started: list[FakeProcess] = []
    try:
        for i, name in enumerate(names):
            started.append(FakeProcess(served[i] if served else name, dict(options)).start())
        yield started
    finally:
        for fake in started:
            fake.kill()


def fleet_config(
    artifact_dir: str | Path,
    models: Sequence[str],
    generalist: str,
    urls: Sequence[str],
    served: Sequence[str],
    **extra: Any,
) -> dict[str, Any]:
    """A Triage config: backend ``i`` is artifact model ``models[i]``, served at ``urls[i]`` as ``served[i]``."""
    backends = [
        {"name": m, "base_url": url, "model": s, "role": "generalist" if m == generalist else "specialist",
         "price_per_mtok": {"input": 0.1 * (i + 1), "output": 0.2 * (i + 1)},
         "timeouts": {"connect": 2, "first_byte": 10, "total": 30}}
        for i, (m, url, s) in enumerate(zip(models, urls, served, strict=True))
    ]
    config: dict[str, Any] = {"artifact": str(artifact_dir), "backends": backends}
    for key, value in extra.items():
        config[key] = value
    return config


def wait_healthy(proc: subprocess.Popen[bytes], url: str, what: str, log: Path, timeout: float,
                 interval: float) -> None:
    """Poll ``url`` until it answers 200; fail early if the process exits, or after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}; see {log}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(interval)
    raise TimeoutError(f"{what} did not start in {timeout} s; see {log}")


@dataclass
class TriageProcess:
    """``triage serve`` in its own process (the way it runs in production: its own cores, its own GIL)."""

    config: dict[str, Any]
    workdir: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180.0) -> TriageProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        path = self.workdir / "triage.yaml"
        path.write_text(json.dumps(self.config, indent=1))  # JSON is YAML
        self.log_path = self.workdir / "triage.log"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [PYTHON, "-m", "router.cli", "serve", "--config", str(path), "--port", str(self.port),
                 "--log-level", "warning"],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env,
            )
        try:
            wait_healthy(self.proc, self.url + "/health", "triage", self.log_path, timeout, interval=0.25)
        except BaseException:
            self.stop()
            raise
        return self

    def rss_mib(self) -> float:
        """Resident memory of the server process, from /proc (Linux)."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        terminate(self.proc)
        self.proc = None


def terminate(proc: subprocess.Popen[Any] | None) -> None:
    """SIGTERM (a graceful drain, up to 20 s), then SIGKILL; nothing if it already exited."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)


def metric_values(text: str, name: str) -> dict[str, float]:
    """``{label string: value}`` for one metric in Prometheus text format (labels as written)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            key, _, value = line.rpartition(" ")
            labels = key[len(name):].strip("{}")
            out[labels] = float(value)
    return out
