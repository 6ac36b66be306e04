"""The HTTP server under ``triage serve``: uvicorn with a deadline on request heads and a bound on connections.

uvicorn closes an idle keep-alive connection after ``timeout_keep_alive``, but a connection that has not yet sent
a complete request head (a client that connects and says nothing, or sends a header a byte a second) has no
deadline at all, and every such connection holds a file descriptor. ``GuardedProtocol`` closes a connection whose
request head is not complete ``head_timeout_s`` after the connection opened or its next request began, and refuses
connections beyond ``max_connections``.

With ``server.workers`` above 1, uvicorn's supervisor binds the socket once and starts that many worker processes
on it (``spawn``: each re-imports Triage and runs the lifespan, so each loads its own embedder and artifact). The
supervisor pickles the server config to each worker, so nothing in it may be a class made at run time: the guard's
limits travel as attributes of :class:`ServerConfig`, and the app travels as an :class:`AppFactory` that each
worker calls. The supervisor restarts a worker that dies, stops when one fails to start, and on SIGHUP replaces
the workers one at a time (each new one loads the artifact before the old one goes), as ``POST /admin/reload`` to
any worker also asks it to. The workers share one ``PROMETHEUS_MULTIPROC_DIR`` (a fresh directory, removed when
the supervisor stops, unless one is given), so ``/metrics`` shows all of them whichever one answers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any

import uvicorn
from prometheus_client import multiprocess
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.supervisors import Multiprocess

from router.metrics import MULTIPROC_DIR
from router.settings import ServerSettings, Settings

log = logging.getLogger("triage.server")


class ServerConfig(uvicorn.Config):
    """uvicorn's config with the guard's limits on it (a worker process gets both in one pickle)."""

    def __init__(self, app: Any, settings: ServerSettings, log_level: str = "info", factory: bool = False) -> None:
        super().__init__(
            app, host=settings.host, port=settings.port, log_level=log_level, http=GuardedProtocol, factory=factory,
            timeout_keep_alive=int(settings.keep_alive_s), timeout_graceful_shutdown=30, workers=settings.workers,
        )
        self.head_timeout_s = settings.head_timeout_s
        self.max_connections = settings.max_connections


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a request-head deadline and a connection cap (from its
    :class:`ServerConfig`; uvicorn instantiates the class itself, per connection)."""

    _last_refusal_log: float = float("-inf")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.config, ServerConfig):
            raise TypeError("GuardedProtocol needs a router.server.ServerConfig (its limits)")
        self.head_timeout_s: float = self.config.head_timeout_s
        self.max_connections: int = self.config.max_connections
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            now = self.loop.time()
            if now - GuardedProtocol._last_refusal_log >= 10:  # a flood of connections must not flood the log
                GuardedProtocol._last_refusal_log = now
                log.warning("refusing connections: %d open (server.max_connections)", len(self.connections))
            transport.close()
            return
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_timer is None:  # a keep-alive connection's next request: a new head deadline
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()


def config(app: Any, settings: ServerSettings, log_level: str = "info", factory: bool = False) -> ServerConfig:
    return ServerConfig(app, settings, log_level, factory)


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs every backend call and health probe at INFO: not news (router/backends.py logs changes of state)
    logging.getLogger("httpx").setLevel(logging.WARNING)


@dataclass(frozen=True)
class AppFactory:
    """Builds the app where it will serve: in this process, or in each worker process (pickled there, called
    once). A worker names itself ``<replica>-<pid>`` so that each writes its own decision log and its records
    say which worker decided."""

    settings: Settings
    log_level: str = "info"

    def __call__(self) -> Any:
        from router.app import create_app
        from router.state import replica_name

        configure_logging(self.log_level)  # a spawned worker starts with no logging set up
        settings = self.settings
        if settings.server.workers == 1:
            return create_app(settings)
        worker = f"{replica_name(settings.state, settings.server.port)}-{os.getpid()}"
        settings = settings.model_copy(update={"state": settings.state.model_copy(update={"replica_id": worker})})
        return create_app(settings, supervisor=os.getppid())  # a spawned worker's parent is the supervisor


def workers_problem(settings: Settings) -> str | None:
    """Why these settings cannot run in ``server.workers`` processes, or None. Each worker has its own memory: the
    per-key limits, the request records that feedback needs and conversation affinity must live in Redis, or N
    workers would admit N times each limit and lose feedback that reaches another worker than the one that
    served; and N processes rotating one decision-log file would clobber each other's rotations."""
    if settings.server.workers == 1:
        return None
    if settings.state.redis_url is None:
        return ("server.workers > 1 needs state.redis_url: limits, feedback records and conversation affinity kept "
                "in each worker's memory would be per worker")
    path = settings.decision_log.path
    if path is not None and "{replica}" not in path:
        return "server.workers > 1 needs '{replica}' in decision_log.path: one file per worker"
    return None


def run(settings: Settings, log_level: str = "info") -> int:
    """Serve ``settings`` until stopped: in this process, or in ``settings.server.workers`` worker processes on one
    socket. Returns the exit status."""
    server_config = config(AppFactory(settings, log_level), settings.server, log_level, factory=True)
    if settings.server.workers == 1:
        uvicorn.Server(server_config).run()
        return 0
    from uvicorn.config import STARTUP_FAILURE

    given = os.environ.get(MULTIPROC_DIR)
    directory = given or tempfile.mkdtemp(prefix="triage-metrics-")
    os.environ[MULTIPROC_DIR] = directory  # the spawned workers inherit it before they import prometheus-client
    try:
        supervisor = Supervisor(server_config, sockets=[server_config.bind_socket()])
        supervisor.run()
    finally:
        if given is None:
            del os.environ[MULTIPROC_DIR]
            shutil.rmtree(directory, ignore_errors=True)
    failed = any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes)
    return STARTUP_FAILURE if failed else 0


class Supervisor(Multiprocess):
    """uvicorn's supervisor, which also tells prometheus-client when a worker is gone (died and restarted, or
    replaced on SIGHUP): its live gauges leave ``/metrics``, its counters stay in the sums."""

    def keep_subprocess_alive(self) -> None:
        before = self._pids()
        super().keep_subprocess_alive()
        self._forget(before)

    def restart_all(self) -> None:
        before = self._pids()
        super().restart_all()
        self._forget(before)

    def _pids(self) -> set[int]:
        return {process.pid for process in self.processes if process.pid is not None}

    def _forget(self, before: set[int]) -> None:
        for pid in before - self._pids():
            multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
