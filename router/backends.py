"""Backends: one model each, served by one or more replicas; each replica has its own ``httpx.AsyncClient``
(its connection pool), circuit breaker and count of requests in flight.

    BackendError           the backend failed (connect, timeout, 5xx, malformed body): try the next one
    └── BackendBusy        it answered 429: not a fault, but it cannot take the request now (``retry_after``)
    BackendClientError     the backend refused the request (4xx): the client's fault, sent on in OpenAI's shape

A request goes to the replica with the fewest requests in flight (ties taken in turn); one that fails before
its first byte is retried on the backend's other replicas before the caller moves on to another model. The
backend is offered to the policy while any replica is (router/circuit.py: neither suspect nor open).

Streaming calls return once the first chunk has arrived, so a backend that dies before its first byte can
still be retried elsewhere; after that the bytes go to the client as they come, never re-serialised.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from router.circuit import Circuit
from router.connections import ShardedTransport
from router.load import Load
from router.metrics import CIRCUIT_STATES, Metrics
from router.replica import Answer as Answer
from router.replica import BackendBusy as BackendBusy
from router.replica import BackendClientError as BackendClientError
from router.replica import BackendError as BackendError
from router.replica import Replica as Replica
from router.replica import Stream as Stream
from router.replica import retry_after as retry_after
from router.settings import BackendSettings, ConnectionSettings, HealthSettings, PoolSettings

if TYPE_CHECKING:
    from router.discovery import Discovery

log = logging.getLogger("triage.backends")
T = TypeVar("T")


class Health:
    """A backend's view over its replicas' circuits, for callers that ask about the model as a whole."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    def allows(self) -> bool:
        return any([r.circuit.allows() for r in self._backend.replicas])  # a list: every replica's state moves

    @property
    def state(self) -> str:
        """The healthiest replica's circuit state."""
        return min((r.circuit.state for r in self._backend.replicas), key=CIRCUIT_STATES.__getitem__)


class Backend:
    def __init__(self, settings: BackendSettings, replicas: list[Replica]) -> None:
        self.settings = settings
        self.replicas = replicas
        self.circuit = Health(self)
        self._turn = 0

    @property
    def name(self) -> str:
        return self.settings.name

    def queue_seconds(self) -> float:
        """The expected wait on the least loaded replica the circuits allow (on any, when none is allowed)."""
        wait = self.room()
        return wait if wait is not None else min((r.queue_seconds() for r in self.replicas), default=math.inf)

    def room(self) -> float | None:
        """The expected wait on the least loaded replica the circuits allow; None when none is allowed."""
        waits = [r.queue_seconds() for r in self.replicas if r.circuit.allows()]
        return min(waits) if waits else None

    def pick(self, tried: Collection[Replica] = ()) -> Replica | None:
        """The untried replica with the fewest requests outstanding among those the circuits allow, ties taken
        in turn; when none is allowed and none tried yet, the least busy of all (the caller chose this model)."""
        n = len(self.replicas)
        self._turn = (self._turn + 1) % max(n, 1)
        order = sorted(range(n), key=lambda i: (self.replicas[i].outstanding(), (i - self._turn) % n))
        candidates = [self.replicas[i] for i in order if self.replicas[i] not in tried]
        allowed = [r for r in candidates if r.circuit.allows()]
        if allowed:
            return allowed[0]
        return candidates[0] if candidates and not tried else None

    async def post_json(self, path: str, body: Mapping[str, Any]) -> Answer:
        async def call(replica: Replica) -> Answer:
            return Answer(await replica.post_json(path, body), replica)

        return await self._each_replica(call)

    async def open_stream(self, path: str, body: Mapping[str, Any]) -> Stream:
        return await self._each_replica(lambda replica: replica.open_stream(path, body))

    async def _each_replica(self, call: Callable[[Replica], Awaitable[T]]) -> T:
        tried: list[Replica] = []
        error: BackendError | None = None
        busy: list[BackendBusy] = []
        while (replica := self.pick(tried)) is not None:
            tried.append(replica)
            try:
                result = await call(replica)
            except BackendBusy as exc:
                busy.append(exc)
                error = exc
                continue
            except BackendError as exc:
                if len(self.replicas) > 1:
                    log.warning("%s (replica %s); trying another replica", exc, replica.label)
                error = exc
                continue
            return result
        if busy and len(busy) == len(tried):  # every replica tried was busy: wait as long as the least busy asks
            waits = [b.retry_after for b in busy if b.retry_after is not None]
            raise BackendBusy(str(busy[0]), min(waits) if waits else None)
        assert error is not None
        raise error

    async def probe(self) -> bool:
        results = await asyncio.gather(*(r.probe() for r in self.replicas))
        return any(results)


TransportFactory = Callable[[BackendSettings], httpx.AsyncBaseTransport | None]


class BackendPool:
    def __init__(
        self,
        backends: list[BackendSettings],
        health: HealthSettings,
        metrics: Metrics,
        transport_for: TransportFactory | None = None,
        connections: ConnectionSettings | None = None,
        pool: PoolSettings | None = None,
    ) -> None:
        self.connections = connections or ConnectionSettings()
        self.pool = pool or PoolSettings()
        self._released = asyncio.Event()
        self.health = health
        self.metrics = metrics
        self.transport_for = transport_for
        self.backends: dict[str, Backend] = {}
        for settings in backends:
            replicas = [self.replica(settings, i, url) for i, url in enumerate(settings.replica_urls())]
            self.backends[settings.name] = Backend(settings, replicas)
        metrics.declare_backends(list(self.backends))
        for backend in self.backends.values():
            metrics.declare_replicas(backend.name, [r.label for r in backend.replicas])
        self._probe_task: asyncio.Task[None] | None = None
        self._scrape_task: asyncio.Task[None] | None = None
        from router.admission import Admission  # it reads this module's classes

        self.admission = Admission(self, self.pool, metrics)
        self.discovery: Discovery | None = None

    def replica(self, settings: BackendSettings, index: int, url: str) -> Replica:
        transport = self.transport_for(settings) if self.transport_for else None
        timeouts = settings.timeouts
        connections = self.connections
        client = httpx.AsyncClient(
            base_url=url,
            # Several small connection pools: one large one is slow to serve bursts (router/connections.py).
            transport=transport or ShardedTransport(connections.max_per_backend, connections.pools),
            timeout=httpx.Timeout(timeouts.first_byte, connect=timeouts.connect),
        )
        name = settings.name
        made: list[Replica] = []  # the callbacks read the label when they fire: DNS discovery renumbers
        circuit = Circuit(self.health.failure_threshold, self.health.open_seconds,
                          on_change=lambda state: self._circuit_changed(name, made[0].label, state),
                          on_health=lambda up: self._health_changed(name, made[0].label, up))
        load = Load(settings.max_concurrency, self.pool.service_s)
        made.append(Replica(name, index, url, client, circuit, settings, self.metrics, load, self._wake))
        return made[0]

    def _wake(self) -> None:
        """A replica freed a place: whoever waits for room looks again."""
        self._released.set()
        self._released = asyncio.Event()

    async def released(self, timeout: float) -> None:
        """Returns when some replica frees a place, or after ``timeout`` seconds."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._released.wait(), timeout)

    def _circuit_changed(self, name: str, label: str, state: str) -> None:
        log.warning("circuit of backend %s replica %s is now %s", name, label, state)
        if name in self.backends:
            self.metrics.set_circuit(name, self.backends[name].circuit.state)

    def _health_changed(self, name: str, label: str, up: bool) -> None:
        # Logged on a change only: a probe that finds things as they were says nothing.
        (log.info if up else log.warning)("backend %s replica %s is %s", name, label,
                                          "up" if up else "down (a call or probe failed)")
        self.metrics.replica_up.labels(name, label).set(1 if up else 0)
        if name in self.backends:
            replicas = self.backends[name].replicas
            self.metrics.backend_up.labels(name).set(1 if any(r.circuit.allows() for r in replicas) else 0)

    def __getitem__(self, name: str) -> Backend:
        return self.backends[name]

    def __contains__(self, name: object) -> bool:
        return name in self.backends

    def available(self) -> set[str]:
        return {name for name, backend in self.backends.items() if backend.circuit.allows()}

    async def probe_all(self) -> dict[str, bool]:
        results = await asyncio.gather(*(b.probe() for b in self.backends.values()))
        return dict(zip(self.backends, results, strict=True))

    async def _scrape_loop(self) -> None:
        interval = self.pool.scrape_interval_s
        while True:
            replicas = [r for b in self.backends.values() for r in b.replicas]
            await asyncio.gather(*(r.scrape(timeout=interval) for r in replicas), return_exceptions=True)
            await asyncio.sleep(interval)

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(self.health.probe_interval_s)
            try:
                await self.probe_all()
            except Exception:  # a probe must never kill the loop
                log.exception("health probe failed")

    def start(self) -> None:
        from router.discovery import Discovery  # it reads this module's classes

        if self.health.probe_interval_s > 0:
            self._probe_task = asyncio.create_task(self._probe_loop(), name="triage-health-probe")
        if self.pool.scrape_interval_s > 0:
            self._scrape_task = asyncio.create_task(self._scrape_loop(), name="triage-load-scrape")
        self.discovery = Discovery(self)
        self.discovery.start()

    async def aclose(self) -> None:
        for task in (self._probe_task, self._scrape_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.discovery is not None:
            await self.discovery.aclose()
        await asyncio.gather(*(r.client.aclose() for b in self.backends.values() for r in b.replicas))
