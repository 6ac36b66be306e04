"""Replicas found by DNS: a backend with ``discover: {dns, port, scheme, path, refresh_s}`` is served by every
address its name resolves to (a Kubernetes headless Service gives one per ready pod).

Until the first lookup the backend's one replica is the name itself (``base_url``), so it serves like a plain
Service. Each lookup keeps the replicas whose address is still listed (their connections, circuits and counts
carry on), adds the new ones, and retires the ones gone; a retired replica's client is closed once its last
request has finished. Replicas are numbered by their place in the sorted address list, so the ``replica``
metric label is bounded by the pool's size, not by how often pods come and go. A failed lookup keeps the
current replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable

from router.backends import Backend, BackendPool, Replica
from router.settings import DiscoverSettings

log = logging.getLogger("triage.discovery")

Resolver = Callable[[str, int], Awaitable[list[str]]]


async def resolve(name: str, port: int) -> list[str]:
    """The addresses ``name`` resolves to (IPv4 and IPv6), sorted, without repeats."""
    infos = await asyncio.get_running_loop().getaddrinfo(name, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


class Discovery:
    def __init__(self, pool: BackendPool, resolver: Resolver = resolve) -> None:
        self.pool = pool
        self.resolver = resolver
        self._retired: list[Replica] = []
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def backends(self) -> list[Backend]:
        return [b for b in self.pool.backends.values() if b.settings.discover is not None]

    async def refresh(self, backend: Backend) -> None:
        """One lookup for ``backend``; its replicas become the addresses found (none found: unchanged)."""
        discover = backend.settings.discover
        assert discover is not None
        try:
            addresses = await self.resolver(discover.dns, discover.port)
        except OSError as exc:
            log.warning("backend %s: looking up %s failed (%s); keeping %d replicas", backend.name, discover.dns,
                        exc, len(backend.replicas))
            return
        if not addresses:
            return
        self._apply(backend, discover, addresses)
        await self._close_idle()

    def _apply(self, backend: Backend, discover: DiscoverSettings, addresses: list[str]) -> None:
        urls = [discover.url_for(a) for a in addresses]
        current = {r.url: r for r in backend.replicas}
        if list(current) == urls:
            return
        replicas = []
        for index, url in enumerate(urls):
            replica = current.pop(url, None) or self.pool.replica(backend.settings, index, url)
            replica.index = index
            replicas.append(replica)
        backend.replicas = replicas
        self._retired += current.values()
        self.pool.metrics.declare_replicas(backend.name, [r.label for r in replicas])
        for stale in range(len(replicas), len(replicas) + len(current)):  # slots no longer filled
            with contextlib.suppress(KeyError):
                self.pool.metrics.replica_up.remove(backend.name, str(stale))
                self.pool.metrics.replica_in_flight.remove(backend.name, str(stale))
        log.info("backend %s: %d replicas from %s", backend.name, len(replicas), discover.dns)

    async def _close_idle(self) -> None:
        idle = [r for r in self._retired if r.in_flight == 0]
        self._retired = [r for r in self._retired if r.in_flight > 0]
        await asyncio.gather(*(r.client.aclose() for r in idle))

    async def _loop(self, backend: Backend) -> None:
        discover = backend.settings.discover
        assert discover is not None
        while True:
            try:
                await self.refresh(backend)
            except Exception:  # a lookup must never kill the loop
                log.exception("backend %s: replica discovery failed", backend.name)
            await asyncio.sleep(discover.refresh_s)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._loop(b), name=f"triage-discover-{b.name}") for b in self.backends]

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await asyncio.gather(*(r.client.aclose() for r in self._retired))
        self._retired = []
