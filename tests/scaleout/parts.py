"""Real servers for the scale-out tests, each started by us on a free loopback port and stopped by its pid:
Debian's ``redis-server`` (the shared state) and ``haproxy`` (the load balancer in front of the replicas)."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.harness.fleet import free_port


def binary(name: str) -> str:
    path = shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if Path(p).exists()),
                                      None)
    if path is None:  # scripts/test.sh installs both from Debian
        pytest.skip(f"{name} is not installed (scripts/test.sh installs it: apt-get install {name})")
    return path


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"{what} did not listen on {port} in {timeout} s")


def stop(proc: subprocess.Popen[bytes] | None, sig: signal.Signals = signal.SIGTERM) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@dataclass
class RedisServer:
    """A throwaway redis-server: no persistence, loopback only; ``stop`` and ``start`` keep its port."""

    workdir: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.port = self.port or free_port()
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.workdir / "redis.log", "ab") as log:
            self.proc = subprocess.Popen(
                [binary("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(self.workdir)],
                stdout=log, stderr=subprocess.STDOUT)
        wait_port(self.port, self.proc, "redis-server")
        return self

    def stop(self) -> None:
        stop(self.proc)
        self.proc = None


@dataclass
class HAProxy:
    """Round robin over ``servers`` (host:port), health-checked on /health every 200 ms. A connection a dead
    replica refuses is retried on another one (``retry-on conn-failure`` with ``redispatch``); a request already
    sent to a replica that dies is not replayed by the balancer (a POST is not idempotent): the client sees 502."""

    workdir: Path
    servers: list[str]
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> str:
        lines = [
            "global", "  maxconn 2048",
            "defaults", "  mode http", "  timeout connect 2s", "  timeout client 60s", "  timeout server 60s",
            "  retries 3", "  option redispatch 1", "  retry-on conn-failure", "  http-reuse never",
            "frontend triage", f"  bind 127.0.0.1:{self.port}", "  default_backend routers",
            "backend routers", "  balance roundrobin", "  option httpchk GET /health",
            "  default-server inter 200ms fall 2 rise 2",
        ]
        lines += [f"  server r{i} {server} check" for i, server in enumerate(self.servers)]
        return "\n".join(lines) + "\n"

    def start(self) -> HAProxy:
        self.port = self.port or free_port()
        self.workdir.mkdir(parents=True, exist_ok=True)
        path = self.workdir / "haproxy.cfg"
        path.write_text(self.config())
        with open(self.workdir / "haproxy.log", "ab") as log:
            self.proc = subprocess.Popen([binary("haproxy"), "-db", "-f", str(path)], stdout=log,
                                         stderr=subprocess.STDOUT)
        wait_port(self.port, self.proc, "haproxy")
        return self

    def stop(self) -> None:
        stop(self.proc)
        self.proc = None
