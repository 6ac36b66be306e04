"""One server of a backend's model: its ``httpx.AsyncClient`` (connection pool), circuit breaker, requests in
flight and load estimate, and what its calls return or raise.

    BackendError           the backend failed (connect, timeout, 5xx, malformed body): try the next one
    └── BackendBusy        it answered 429: not a fault, but it cannot take the request now (``retry_after``)
    BackendClientError     the backend refused the request (4xx): the client's fault, sent on in OpenAI's shape
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import httpx

from router.circuit import Circuit
from router.load import Load, parse_vllm
from router.metrics import Metrics
from router.settings import BackendSettings

log = logging.getLogger("triage.backends")
T = TypeVar("T")

# OpenAI's error types; a backend's own (vLLM: "BadRequestError") is replaced by the one for its status.
OPENAI_TYPES = {"invalid_request_error", "authentication_error", "permission_error", "not_found_error",
                "rate_limit_error", "api_error"}
STATUS_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error"}
STATUS_CODES = {400: "invalid_request", 401: "invalid_api_key", 403: "permission_denied", 404: "not_found",
                408: "timeout", 409: "conflict", 413: "payload_too_large", 422: "invalid_request"}


class BackendError(Exception):
    """The backend failed; the message is safe for clients (no URL, no key)."""


class BackendBusy(BackendError):
    """The backend answered 429. ``retry_after``: the seconds its ``retry-after`` header asked for, if any."""

    status = 429

    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BackendClientError(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"backend refused the request with {status}")
        self.status = status
        self.body = body


def _error_body(status: int, raw: bytes) -> dict[str, Any]:
    """OpenAI's shape with the backend's message: vLLM's ``"code": 400`` becomes a string code, its
    ``"type": "BadRequestError"`` an OpenAI type."""
    message, kind, param, code = f"the backend refused the request ({status})", None, None, None
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if isinstance(data, dict):
        err = data["error"] if isinstance(data.get("error"), dict) else data  # vLLM's older flat shape
        if "message" in err:
            message = str(err["message"])[:2000]
        kind, param, code = err.get("type"), err.get("param"), err.get("code")
    if kind not in OPENAI_TYPES:
        kind = STATUS_TYPES.get(status, "invalid_request_error")
    if not isinstance(code, str) or not code or code.isdigit():
        code = STATUS_CODES.get(status, f"http_{status}")
    return {"error": {"message": message, "type": kind, "param": param if isinstance(param, str) else None,
                      "code": code}}


def retry_after(headers: httpx.Headers) -> float | None:
    """Seconds from a ``retry-after`` header (a number or an HTTP date), None when absent or unreadable."""
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.datetime.now(datetime.UTC)).total_seconds())


@dataclass
class Stream:
    """An open streaming response whose first chunk has already arrived, and the replica sending it."""

    response: httpx.Response
    first: bytes
    rest: AsyncIterator[bytes]
    replica: Replica
    started: float = 0.0

    async def chunks(self) -> AsyncIterator[bytes]:
        yield self.first
        async for chunk in self.rest:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self.response.aclose()
        finally:
            self.replica.release(self.started)


@dataclass
class Answer:
    """A whole (non-streamed) response body, and the replica that sent it."""

    data: dict[str, Any]
    replica: Replica


class Replica:
    """One server of a backend's model: its client (connection pool), circuit and requests in flight."""

    def __init__(self, backend: str, index: int, url: str, client: httpx.AsyncClient, circuit: Circuit,
                 settings: BackendSettings, metrics: Metrics, load: Load | None = None,
                 on_release: Callable[[], None] | None = None) -> None:
        self.backend, self.index, self.url = backend, index, url
        self.client, self.circuit, self.settings, self.metrics = client, circuit, settings, metrics
        self.load = load or Load(settings.max_concurrency, 1.0)
        self.on_release = on_release
        self.in_flight = 0

    @property
    def label(self) -> str:
        return str(self.index)

    def _headers(self) -> dict[str, str]:
        key = self.settings.api_key
        return {"authorization": f"Bearer {key.get_secret_value()}"} if key else {}

    def _count(self, outcome: str) -> None:
        self.metrics.replica_requests.labels(self.backend, self.label, outcome).inc()

    def outstanding(self) -> float:
        return self.load.outstanding(self.in_flight)

    def queue_seconds(self) -> float:
        return self.load.queue_seconds(self.in_flight)

    def acquire(self) -> float:
        self.in_flight += 1
        self.show_load()
        return time.monotonic()

    def release(self, started: float | None = None) -> None:
        """One request ended; ``started``: it was served (its time feeds the service-time estimate)."""
        self.in_flight -= 1
        if started is not None:
            self.load.observe(time.monotonic() - started)
        self.show_load()
        if self.on_release is not None:
            self.on_release()

    def show_load(self) -> None:
        labels = (self.backend, self.label)
        self.metrics.replica_in_flight.labels(*labels).set(self.in_flight)
        self.metrics.replica_waiting.labels(*labels).set(self.load.waiting(self.in_flight))
        self.metrics.replica_queue_seconds.labels(*labels).set(self.queue_seconds())

    async def scrape(self, timeout: float) -> None:
        """vLLM's load gauges from the server's /metrics (beside its /v1); nothing changes when it has none."""
        url = httpx.URL(self.url).copy_with(path="/metrics")
        try:
            response = await self.client.get(url, headers=self._headers(), timeout=timeout)
        except httpx.HTTPError:
            return
        if response.status_code == 200:
            scrape = parse_vllm(response.text, time.monotonic())
            if scrape is not None:
                self.load.scrape = scrape
                self.show_load()

    def _failed(self, what: str, unreachable: bool = False) -> BackendError:
        """``unreachable``: nothing answered in time (refused, reset, timed out), as when the server died or
        hangs; the replica is suspect at once. A server that answers badly (5xx) counts toward the threshold."""
        self.circuit.record_failure(suspect=unreachable)
        self._count("failed")
        return BackendError(f"backend {self.backend!r} {what}")

    def _refused(self, status: int, raw: bytes, headers: httpx.Headers) -> Exception:
        """The exception for a 4xx or 5xx answer."""
        if status == 429:  # overloaded, not broken: the circuit is left alone
            self._count("busy")
            return BackendBusy(f"backend {self.backend!r} is busy (429)", retry_after(headers))
        if status >= 500:
            return self._failed(f"answered {status}")
        self.circuit.record_success()  # it answered: the fault is the request's
        self._count("client_error")
        return BackendClientError(status, _error_body(status, raw))

    async def post_json(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        started: float | None = self.acquire()
        served = False
        try:
            try:
                async with asyncio.timeout(self.settings.timeouts.total):
                    response = await self.client.post(path, json=body, headers=self._headers())
            except (httpx.TimeoutException, TimeoutError):
                raise self._failed("timed out", unreachable=True) from None
            except httpx.HTTPError:
                raise self._failed("unreachable", unreachable=True) from None
            if response.status_code >= 400:
                raise self._refused(response.status_code, response.content, response.headers)
            try:
                data = response.json()
            except ValueError:
                raise self._failed("sent a malformed JSON body") from None
            if not isinstance(data, dict):
                raise self._failed("sent a malformed JSON body")
            served = True
        finally:
            self.release(started if served else None)
        self.circuit.record_success()
        self._count("ok")
        return data

    async def open_stream(self, path: str, body: Mapping[str, Any]) -> Stream:
        request = self.client.build_request("POST", path, json=body, headers=self._headers())
        started = self.acquire()
        try:
            async with asyncio.timeout(self.settings.timeouts.first_byte):
                response = await self.client.send(request, stream=True)
                try:
                    if response.status_code >= 400:
                        raw = await response.aread()
                        raise self._refused(response.status_code, raw, response.headers)
                    if not response.headers.get("content-type", "").startswith("text/event-stream"):
                        raise self._failed("answered a stream request without an event stream")
                    rest = response.aiter_bytes()
                    first = b""
                    while not first:  # skip empty keep-alive reads
                        first = await anext(rest)
                except BaseException:
                    await response.aclose()
                    raise
        except BaseException as exc:
            self.release()
            if isinstance(exc, StopAsyncIteration):
                raise self._failed("closed the stream before the first chunk") from None
            if isinstance(exc, httpx.TimeoutException | TimeoutError):
                raise self._failed("timed out before the first byte", unreachable=True) from None
            if isinstance(exc, httpx.HTTPError):
                raise self._failed("unreachable", unreachable=True) from None
            raise
        self.circuit.record_success()
        self._count("ok")
        return Stream(response, first, rest, self, started)  # the stream releases its place when closed

    async def probe(self) -> bool:
        """GET /models: a dead replica leaves routing before a client finds out; a live one is let back in."""
        try:
            response = await self.client.get("/models", headers=self._headers(), timeout=5.0)
            ok = response.status_code == 200
        except httpx.HTTPError:
            ok = False
        # A 200 from /models clears a suspect replica and closes a half-open circuit, but does not close an open
        # one: a vLLM whose engine died still lists its models, so the probe must not undo what failed requests
        # taught the circuit, nor reset their count.
        if ok:
            self.circuit.record_alive()
        elif self.circuit.state != "open":
            self.circuit.record_failure()
        return ok
