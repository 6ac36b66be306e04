"""Backends: one injected ``httpx.AsyncClient`` per OpenAI-compatible server, with its circuit breaker.

    BackendError           the backend failed (connect, timeout, 5xx, malformed body): try the next one
    BackendClientError     the backend refused the request (4xx): the client's fault, passed through as is

Streaming calls return once the first chunk has arrived, so a backend that dies before its first byte can
still be retried elsewhere; after that the bytes go to the client as they come, never re-serialised.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from router.circuit import Circuit
from router.connections import ShardedTransport
from router.metrics import Metrics
from router.settings import BackendSettings, ConnectionSettings, HealthSettings

log = logging.getLogger("triage.backends")


class BackendError(Exception):
    """The backend failed; the message is safe for clients (no URL, no key)."""


class BackendClientError(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"backend refused the request with {status}")
        self.status = status
        self.body = body


def _error_body(status: int, raw: bytes) -> dict[str, Any]:
    """The backend's own OpenAI-shaped error if it sent one, else one made from its status."""
    try:
        data = json.loads(raw)
        if isinstance(data, dict) and isinstance(data.get("error"), dict):
            err = data["error"]
            return {"error": {"message": str(err.get("message", ""))[:2000], "type": err.get("type")
                              or "invalid_request_error", "param": err.get("param"), "code": err.get("code")}}
        if isinstance(data, dict) and "message" in data:  # vLLM's older flat error shape
            return {"error": {"message": str(data["message"])[:2000], "type": data.get("type")
                              or "invalid_request_error", "param": data.get("param"), "code": data.get("code")}}
    except ValueError:
        pass
    return {"error": {"message": f"the backend refused the request ({status})",
                      "type": "invalid_request_error", "param": None, "code": str(status)}}


@dataclass
class Stream:
    """An open streaming response whose first chunk has already arrived."""

    response: httpx.Response
    first: bytes
    rest: AsyncIterator[bytes]

    async def chunks(self) -> AsyncIterator[bytes]:
        yield self.first
        async for chunk in self.rest:
            yield chunk

    async def aclose(self) -> None:
        await self.response.aclose()


class Backend:
    def __init__(self, settings: BackendSettings, client: httpx.AsyncClient, circuit: Circuit) -> None:
        self.settings = settings
        self.client = client
        self.circuit = circuit

    @property
    def name(self) -> str:
        return self.settings.name

    def _headers(self) -> dict[str, str]:
        key = self.settings.api_key
        return {"authorization": f"Bearer {key.get_secret_value()}"} if key else {}

    async def post_json(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        try:
            async with asyncio.timeout(self.settings.timeouts.total):
                response = await self.client.post(path, json=body, headers=self._headers())
        except (httpx.TimeoutException, TimeoutError):
            raise self._failed("timed out") from None
        except httpx.HTTPError:
            raise self._failed("unreachable") from None
        if response.status_code >= 500 or response.status_code == 429:
            raise self._failed(f"answered {response.status_code}")
        if response.status_code >= 400:
            self.circuit.record_success()  # it answered: the fault is the request's
            raise BackendClientError(response.status_code, _error_body(response.status_code, response.content))
        try:
            data = response.json()
        except ValueError:
            raise self._failed("sent a malformed JSON body") from None
        if not isinstance(data, dict):
            raise self._failed("sent a malformed JSON body")
        self.circuit.record_success()
        return data

    async def open_stream(self, path: str, body: Mapping[str, Any]) -> Stream:
        request = self.client.build_request("POST", path, json=body, headers=self._headers())
        try:
            async with asyncio.timeout(self.settings.timeouts.first_byte):
                response = await self.client.send(request, stream=True)
                try:
                    if response.status_code >= 400:
                        raw = await response.aread()
                        if response.status_code >= 500 or response.status_code == 429:
                            raise self._failed(f"answered {response.status_code}")
                        self.circuit.record_success()
                        raise BackendClientError(response.status_code, _error_body(response.status_code, raw))
                    if not response.headers.get("content-type", "").startswith("text/event-stream"):
                        raise self._failed("answered a stream request without an event stream")
                    rest = response.aiter_bytes()
                    first = b""
                    while not first:  # skip empty keep-alive reads
                        first = await anext(rest)
                except BaseException:
                    await response.aclose()
                    raise
        except StopAsyncIteration:
            raise self._failed("closed the stream before the first chunk") from None
        except (httpx.TimeoutException, TimeoutError):
            raise self._failed("timed out before the first byte") from None
        except httpx.HTTPError:
            raise self._failed("unreachable") from None
        self.circuit.record_success()
        return Stream(response, first, rest)

    def _failed(self, what: str) -> BackendError:
        self.circuit.record_failure()
        return BackendError(f"backend {self.name!r} {what}")

    async def probe(self) -> bool:
        """GET /models: a dead backend leaves the policy before a client finds out; a live one is let back in."""
        try:
            response = await self.client.get("/models", headers=self._headers(), timeout=5.0)
            ok = response.status_code == 200
        except httpx.HTTPError:
            ok = False
        # A 200 from /models only closes a half-open circuit: a vLLM whose engine died still lists its models,
        # so the probe must not undo what failed requests taught the circuit, nor reset their count.
        state = self.circuit.state
        if ok and state == "half_open":
            self.circuit.record_success()
        elif not ok and state != "open":
            self.circuit.record_failure()
        return ok


TransportFactory = Callable[[BackendSettings], httpx.AsyncBaseTransport | None]


class BackendPool:
    def __init__(
        self,
        backends: list[BackendSettings],
        health: HealthSettings,
        metrics: Metrics,
        transport_for: TransportFactory | None = None,
        connections: ConnectionSettings | None = None,
    ) -> None:
        connections = connections or ConnectionSettings()
        self.health = health
        self.backends: dict[str, Backend] = {}
        for settings in backends:
            transport = transport_for(settings) if transport_for else None
            timeouts = settings.timeouts
            client = httpx.AsyncClient(
                base_url=settings.base_url,
                # Several small connection pools: one large one is slow to serve bursts (router/connections.py).
                transport=transport or ShardedTransport(connections.max_per_backend, connections.pools),
                timeout=httpx.Timeout(timeouts.first_byte, connect=timeouts.connect),
            )
            circuit = Circuit(health.failure_threshold, health.open_seconds, on_change=self._watcher(settings.name))
            self.backends[settings.name] = Backend(settings, client, circuit)
        self.metrics = metrics
        metrics.declare_backends(list(self.backends))
        self._probe_task: asyncio.Task[None] | None = None

    def _watcher(self, name: str) -> Callable[[str], None]:
        def changed(state: str) -> None:
            log.warning("circuit of backend %s is now %s", name, state)
            self.metrics.set_circuit(name, state)

        return changed

    def __getitem__(self, name: str) -> Backend:
        return self.backends[name]

    def __contains__(self, name: object) -> bool:
        return name in self.backends

    def available(self) -> set[str]:
        return {name for name, backend in self.backends.items() if backend.circuit.allows()}

    async def probe_all(self) -> dict[str, bool]:
        results = await asyncio.gather(*(b.probe() for b in self.backends.values()))
        return dict(zip(self.backends, results, strict=True))

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(self.health.probe_interval_s)
            try:
                await self.probe_all()
            except Exception:  # a probe must never kill the loop
                log.exception("health probe failed")

    def start(self) -> None:
        if self.health.probe_interval_s > 0:
            self._probe_task = asyncio.create_task(self._probe_loop(), name="triage-health-probe")

    async def aclose(self) -> None:
        if self._probe_task is not None:
            self._probe_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe_task
        await asyncio.gather(*(b.client.aclose() for b in self.backends.values()))
