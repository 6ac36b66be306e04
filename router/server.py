"""The HTTP server under ``triage serve``: uvicorn with a deadline on request heads and a bound on connections.

uvicorn closes an idle keep-alive connection after ``timeout_keep_alive``, but a connection that has not yet sent
a complete request head (a client that connects and says nothing, or sends a header a byte a second) has no
deadline at all, and every such connection holds a file descriptor. ``GuardedProtocol`` closes a connection whose
request head is not complete ``head_timeout_s`` after the connection opened or its next request began, and refuses
connections beyond ``max_connections``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from router.settings import ServerSettings

log = logging.getLogger("triage.server")


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a request-head deadline and a connection cap (class attributes, set by
    :func:`protocol_for`)."""

    head_timeout_s: float = 10.0
    max_connections: int = 2048
    _last_refusal_log: float = float("-inf")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
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


def protocol_for(settings: ServerSettings) -> type[GuardedProtocol]:
    """A protocol class bound to these limits (uvicorn instantiates the class itself, per connection)."""
    return type("ConfiguredGuardedProtocol", (GuardedProtocol,), {
        "head_timeout_s": settings.head_timeout_s, "max_connections": settings.max_connections})


def config(app: Any, settings: ServerSettings, log_level: str = "info") -> uvicorn.Config:
    return uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level=log_level, http=protocol_for(settings),
        timeout_keep_alive=int(settings.keep_alive_s), timeout_graceful_shutdown=30,
    )
