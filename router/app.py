"""The app factory: ``create_app(settings)``. Long-lived objects are built in ``lifespan``, not at import.

Tests inject what they must replace: a registry, an already-loaded encoder (the model takes seconds to
load, so a test session loads it once), and per-backend httpx transports (``httpx.MockTransport``).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager, suppress
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from router.api import api
from router.auth import Authenticator
from router.backends import BackendPool, TransportFactory
from router.decider import Decider
from router.decisionlog import DecisionLog
from router.embedding import TextEncoder, load_encoder
from router.errors import PayloadTooLarge, error_response, install_handlers
from router.gate import Gate
from router.limits import Limits
from router.metrics import Metrics
from router.routing import Routing
from router.service import Triage
from router.settings import Settings
from router.state import build_state, replica_name

log = logging.getLogger("triage")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyLimit:
    """Refuses bodies over ``max_bytes`` with a 413: by content-length up front, or, for a chunked body, by
    reading it (bounded) before the app sees it, then replaying it."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        def too_large() -> ASGIApp:  # built only when needed: JSON-encoding it on every request cost ~40 us
            return error_response(PayloadTooLarge(f"the request body is larger than {self.max_bytes} bytes"))

        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None:
            if length.isdigit() and int(length) > self.max_bytes:
                await too_large()(scope, receive, send)
                return
            await self.app(scope, receive, send)  # the server enforces the declared length
            return
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left before sending its body
            body += message.get("body", b"")
            more = bool(message.get("more_body"))
            if len(body) > self.max_bytes:
                await too_large()(scope, receive, send)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # later reads wait for the disconnect, as usual
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)


def create_app(
    settings: Settings,
    *,
    registry: CollectorRegistry | None = None,
    encoder: TextEncoder | None = None,
    refine_encoder: TextEncoder | None = None,
    transport_for: TransportFactory | None = None,
    supervisor: int | None = None,
) -> FastAPI:
    """The app. ``supervisor``: the pid of the ``triage serve --workers N`` process that started this one as a
    worker; ``POST /admin/reload`` then asks it (SIGHUP) to replace every worker, not only the one that answered."""
    authenticator = Authenticator(settings.auth)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # numpy's BLAS pool (the policy's matrix products) gets its own cap, 1 by default: on a machine shared
        # with model servers a default pool's spinning threads slow both the policy and the embedding model.
        from threadpoolctl import threadpool_limits

        threadpool_limits(settings.embedder.blas_threads)
        model: TextEncoder = encoder if encoder is not None else await asyncio.to_thread(
            load_encoder, settings.embedder)
        # An artifact with a refine tier asks for a second embedder (MiniLM) on close OOD calls: loaded here.
        routing = await asyncio.to_thread(Routing.load, settings.artifact, model, refine_encoder,
                                          lambda: load_encoder(settings.embedder, settings.embedder.refine_backend))
        artifact = routing.artifact
        # Encoders built here are closed here (the remote one holds an HTTP connection pool); injected ones are not.
        built = [e for e, given in ((model, encoder), (routing.refine_encoder, refine_encoder)) if given is None]
        metrics = Metrics(registry or CollectorRegistry())
        decider = Decider(model, settings.embedder, routing.refine_encoder)
        pool = BackendPool(settings.backends, settings.health, metrics, transport_for, settings.connections,
                           settings.pool)
        decisions = DecisionLog(settings.decision_log, replica_name(settings.state, settings.server.port))
        state = build_state(settings.state, metrics.registry)  # in process, or Redis shared by every replica
        await state.start()
        limits = Limits(settings.limits, state)
        triage = Triage(settings, routing, decider, pool, metrics, decisions, authenticator, limits)
        await decider.start()
        pool.start()
        # What is loaded now (the embedding model, the artifact, the libraries) lives as long as the process:
        # out of the collector's reach, a full collection no longer walks it: with torch loaded such a pause
        # would otherwise land in the tail latency of concurrent streams.
        gc.collect()
        gc.freeze()
        app.state.triage = triage
        _on_sighup(triage)
        precision = getattr(model, "precision", None)  # OpenVINO says which arithmetic this CPU got
        log.info("Triage ready: %d backends, artifact k=%d, generalist %s, embedder %s on %s%s",
                 len(pool.backends), artifact.k, settings.generalist_name, model.name, settings.embedder.backend,
                 f" ({precision})" if isinstance(precision, str) else "")
        try:
            yield
        finally:
            app.state.triage = None
            await decider.stop()
            for built_encoder in built:
                close = getattr(built_encoder, "close", None)
                if close is not None:
                    close()
            await pool.aclose()
            await limits.drain()
            await state.close()
            decisions.close()
            gc.unfreeze()  # collectable again (an app built and stopped in a longer-lived process, e.g. a test)

    app = FastAPI(
        title="Triage",
        summary="An OpenAI-compatible router in front of a fleet of specialist LLMs",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.triage = None
    app.state.supervisor = supervisor
    install_handlers(app)
    app.include_router(api)
    app.add_middleware(BodyLimit, max_bytes=settings.limits.max_body_bytes)
    # Outermost: every response gets its request id, and auth is checked before the body is read.
    app.add_middleware(Gate, authenticator=authenticator, server=settings.server)
    return app


def _on_sighup(triage: Triage) -> None:
    """SIGHUP reloads the artifact like POST /admin/reload (main thread only, e.g. under `triage serve`)."""

    def reload() -> None:
        try:
            triage.reload()
            log.info("artifact reloaded on SIGHUP")
        except Exception as exc:  # ArtifactError or anything else: the previous artifact keeps serving
            log.error("artifact reload on SIGHUP rejected, the previous one keeps serving: %s", exc)

    with suppress(RuntimeError, NotImplementedError, ValueError):
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reload)
