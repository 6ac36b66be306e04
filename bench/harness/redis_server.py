"""A throwaway redis-server for benches that run several router processes (they share their state through it):
loopback only, no persistence, started here on a free port and stopped by its pid."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from types import TracebackType

from bench.harness.fleet import free_port, terminate


class RedisServer:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def __enter__(self) -> RedisServer:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(binary).exists():
            raise RuntimeError("redis-server is not installed (scripts/test.sh installs it: apt-get install "
                               "redis-server); several router workers need it")
        import redis

        self.port = free_port()
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.workdir / "redis.log", "ab") as log:
            self.proc = subprocess.Popen([binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                          "--appendonly", "no", "--dir", str(self.workdir)],
                                         stdout=log, stderr=subprocess.STDOUT)
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        deadline = time.monotonic() + 20
        try:
            while True:
                try:
                    client.ping()
                    return self
                except redis.ConnectionError:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        terminate(self.proc)
                        raise RuntimeError(f"redis-server did not answer; see {self.workdir / 'redis.log'}") from None
                    time.sleep(0.05)
        finally:
            client.close()

    def commands(self) -> int:
        """Commands Redis has run so far for its clients (``INFO commandstats``; the bench's own INFO, PING and
        CLIENT calls left out)."""
        import redis

        client = redis.Redis(port=self.port)
        try:
            stats = client.info("commandstats")
        finally:
            client.close()
        ours = ("cmdstat_info", "cmdstat_ping", "cmdstat_hello", "cmdstat_client")
        return sum(int(v["calls"]) for k, v in stats.items() if not k.startswith(ours))

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        terminate(self.proc)
        self.proc = None
