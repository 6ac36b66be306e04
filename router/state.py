"""State that several router replicas must share: per-key limit windows with token reservations, the request
id -> decision record that feedback needs, and the feedback claims.

    SharedState                   the interface (async; one method per operation, each atomic)
    ├── LocalState                this process only: the default, and the fallback while Redis is down
    ├── RedisState                one Redis for every replica (the maintained ``redis`` asyncio client)
    └── ResilientState            RedisState, falling back to a LocalState when Redis fails, back when it answers

A limit window is 60 seconds, sliding. Admission is one atomic step: drop what left the window, compare the
requests and the tokens already in it (settled usage plus open reservations) with the key's limits, and record
the request and its token reservation. Settling replaces a reservation with what the request used. Redis runs
each step as a Lua script with Redis' own clock, so replicas whose clocks differ still share one window.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import socket
import time
from abc import ABC, abstractmethod
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from router.settings import StateSettings

log = logging.getLogger("triage.state")

WINDOW_S = 60.0


@dataclass(frozen=True)
class Refusal:
    """Why a request was not admitted (``"requests"`` or ``"tokens"``) and when to try again."""

    what: str
    retry_after: float


class SharedState(ABC):
    @abstractmethod
    async def admit(self, key: str, requests_per_minute: int | None, tokens_per_minute: int | None, tokens: int,
                    entry: str) -> Refusal | None:
        """One atomic step for ``key``: with ``requests_per_minute`` set, count a request; with
        ``tokens_per_minute`` set and ``tokens`` > 0, reserve them under ``entry``. Or say why not (then nothing
        is recorded)."""

    @abstractmethod
    async def settle(self, key: str, entry: str, tokens: int) -> None:
        """Replace the reservation ``entry`` with the tokens actually used (a no-op once it left the window)."""

    @abstractmethod
    async def remember(self, request_id: str, record: dict[str, Any], ttl_s: float) -> None:
        """Keep a request's decision record (backend, cluster, key) for ``ttl_s`` seconds."""

    @abstractmethod
    async def recall(self, request_id: str) -> dict[str, Any] | None: ...

    @abstractmethod
    async def claim_feedback(self, request_id: str, record: dict[str, Any], ttl_s: float) -> bool:
        """Store the feedback for ``request_id`` if none was stored yet; False if there was."""

    @property
    def status(self) -> str:
        """``in_process``, ``redis`` or ``degraded`` (Redis configured but not answering: counting per process)."""
        return "in_process"

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


@dataclass
class _Window:
    requests: deque[float] = field(default_factory=deque)
    tokens: OrderedDict[str, tuple[float, int]] = field(default_factory=OrderedDict)  # entry -> (time, tokens)

    def trim(self, now: float) -> None:
        while self.requests and now - self.requests[0] >= WINDOW_S:
            self.requests.popleft()
        while self.tokens and now - next(iter(self.tokens.values()))[0] >= WINDOW_S:
            self.tokens.popitem(last=False)


class LocalState(SharedState):
    def __init__(self, remember: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._remember = remember
        self._windows: dict[str, _Window] = {}
        self._records: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()  # id -> (expires, record)
        self._feedback: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()

    def admit_now(self, key: str, requests_per_minute: int | None, tokens_per_minute: int | None, tokens: int,
                  entry: str) -> Refusal | None:
        now = self._clock()
        window = self._windows.setdefault(key, _Window())
        window.trim(now)
        if requests_per_minute is not None and len(window.requests) >= requests_per_minute:
            return Refusal("requests", WINDOW_S - (now - window.requests[0]))
        if tokens_per_minute is not None and tokens > 0:
            used = sum(n for _, n in window.tokens.values())
            if used + tokens > tokens_per_minute:
                oldest = next(iter(window.tokens.values()))[0] if window.tokens else now
                return Refusal("tokens", WINDOW_S - (now - oldest))
            window.tokens[entry] = (now, tokens)
        if requests_per_minute is not None:
            window.requests.append(now)
        return None

    def settle_now(self, key: str, entry: str, tokens: int) -> None:
        window = self._windows.get(key)
        if window is not None and entry in window.tokens:
            window.tokens[entry] = (window.tokens[entry][0], tokens)

    async def admit(self, key: str, requests_per_minute: int | None, tokens_per_minute: int | None, tokens: int,
                    entry: str) -> Refusal | None:
        return self.admit_now(key, requests_per_minute, tokens_per_minute, tokens, entry)

    async def settle(self, key: str, entry: str, tokens: int) -> None:
        self.settle_now(key, entry, tokens)

    def _put(self, store: OrderedDict[str, tuple[float, dict[str, Any]]], request_id: str, record: dict[str, Any],
             ttl_s: float) -> None:
        store[request_id] = (self._clock() + ttl_s, record)
        store.move_to_end(request_id)
        while len(store) > self._remember:
            store.popitem(last=False)

    def _get(self, store: OrderedDict[str, tuple[float, dict[str, Any]]], request_id: str) -> dict[str, Any] | None:
        found = store.get(request_id)
        if found is None:
            return None
        if found[0] <= self._clock():
            del store[request_id]
            return None
        return found[1]

    async def remember(self, request_id: str, record: dict[str, Any], ttl_s: float) -> None:
        self._put(self._records, request_id, record, ttl_s)

    async def recall(self, request_id: str) -> dict[str, Any] | None:
        return self._get(self._records, request_id)

    async def claim_feedback(self, request_id: str, record: dict[str, Any], ttl_s: float) -> bool:
        if self._get(self._feedback, request_id) is not None:
            return False
        self._put(self._feedback, request_id, record, ttl_s)
        return True


# KEYS: requests zset (entry -> time), token zset (entry -> time), token hash (entry -> tokens).
# ARGV: window, requests per minute (0: none), tokens per minute (0: none), tokens, entry.
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local window = tonumber(ARGV[1])
local rpm, tpm, want, entry = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local cutoff = now - window
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', cutoff)
local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', cutoff)
for i = 1, #old do redis.call('HDEL', KEYS[3], old[i]) end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', cutoff)
if rpm > 0 and redis.call('ZCARD', KEYS[1]) >= rpm then
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {'requests', tostring(window - (now - tonumber(first[2])))}
end
if tpm > 0 and want > 0 then
  local used = 0
  for _, v in ipairs(redis.call('HVALS', KEYS[3])) do used = used + tonumber(v) end
  if used + want > tpm then
    local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
    local wait = window
    if first[2] then wait = window - (now - tonumber(first[2])) end
    return {'tokens', tostring(wait)}
  end
  redis.call('ZADD', KEYS[2], now, entry)
  redis.call('HSET', KEYS[3], entry, want)
end
if rpm > 0 then redis.call('ZADD', KEYS[1], now, entry) end
local ttl = math.ceil(window) + 1
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ttl) end
return {'ok', '0'}
"""

_SETTLE = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
return 1
"""


class RedisState(SharedState):
    """Every replica's limits, request records and feedback in one Redis. Keys start with ``prefix``."""

    def __init__(self, url: str, timeout_s: float, prefix: str = "triage:") -> None:
        from redis.asyncio import Redis  # imported here: a single replica never needs it

        self.prefix = prefix
        self.client = Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                                     decode_responses=True)
        self._admit = self.client.register_script(_ADMIT)
        self._settle = self.client.register_script(_SETTLE)

    def _limit_keys(self, key: str) -> list[str]:
        # One hash tag per API key: its three keys land in one Redis Cluster slot, as a script needs.
        base = f"{self.prefix}limit:{{{key}}}"
        return [base + ":requests", base + ":token-times", base + ":tokens"]

    async def admit(self, key: str, requests_per_minute: int | None, tokens_per_minute: int | None, tokens: int,
                    entry: str) -> Refusal | None:
        what, wait = await self._admit(keys=self._limit_keys(key), args=[
            WINDOW_S, requests_per_minute or 0, tokens_per_minute or 0, tokens, entry])
        return None if what == "ok" else Refusal(str(what), float(wait))

    async def settle(self, key: str, entry: str, tokens: int) -> None:
        await self._settle(keys=self._limit_keys(key)[2:], args=[entry, tokens])

    async def remember(self, request_id: str, record: dict[str, Any], ttl_s: float) -> None:
        await self.client.set(f"{self.prefix}request:{request_id}", json.dumps(record), px=int(ttl_s * 1000))

    async def recall(self, request_id: str) -> dict[str, Any] | None:
        raw = await self.client.get(f"{self.prefix}request:{request_id}")
        return None if raw is None else dict(json.loads(raw))

    async def claim_feedback(self, request_id: str, record: dict[str, Any], ttl_s: float) -> bool:
        stored = await self.client.set(f"{self.prefix}feedback:{request_id}", json.dumps(record), nx=True,
                                       px=int(ttl_s * 1000))
        return bool(stored)

    async def ping(self) -> bool:
        return bool(await self.client.ping())

    async def close(self) -> None:
        await self.client.aclose()


class ResilientState(SharedState):
    """Redis while it answers; this process' own ``LocalState`` while it does not.

    The first failed call logs a warning, sets ``triage_shared_state_up`` to 0 and answers from the local state;
    from then on calls go straight to the local state (a dead Redis costs no timeouts per request) while a
    background task tries Redis every ``retry_s``. When it answers again, calls go back to Redis. What was
    counted locally meanwhile stays local: each replica admitted at most the full limit while Redis was away.
    """

    def __init__(self, redis: RedisState, local: LocalState, retry_s: float, registry: CollectorRegistry) -> None:
        self.redis = redis
        self.local = local
        self.retry_s = retry_s
        self.up = Gauge("triage_shared_state_up", "1 while the shared state (Redis) answers; 0 while limits and "
                        "feedback records are kept per process", multiprocess_mode="livemin",
                        registry=registry)
        self.errors = Counter("triage_shared_state_errors_total", "failed calls to the shared state (Redis)",
                              registry=registry)
        self.up.set(1)
        self._healthy = True
        self._probe: asyncio.Task[None] | None = None

    @property
    def status(self) -> str:
        return "redis" if self._healthy else "degraded"

    async def start(self) -> None:
        try:
            await self.redis.ping()
        except Exception as exc:  # starting without Redis is allowed: the replica routes, limits count locally
            self._degrade(exc)

    def _degrade(self, exc: BaseException) -> None:
        self.errors.inc()
        if not self._healthy:
            return
        self._healthy = False
        self.up.set(0)
        log.warning("shared state (Redis) failed (%s): limits and feedback records are per process until it "
                    "answers again", type(exc).__name__)
        if self._probe is None or self._probe.done():
            self._probe = asyncio.get_running_loop().create_task(self._recover())

    async def _recover(self) -> None:
        while not self._healthy:
            await asyncio.sleep(self.retry_s)
            try:
                await self.redis.ping()
            except Exception:
                self.errors.inc()
                continue
            self._healthy = True
            self.up.set(1)
            log.warning("shared state (Redis) answers again: limits and feedback records are shared again")

    async def _call(self, name: str, *args: Any) -> Any:
        if self._healthy:
            try:
                return await getattr(self.redis, name)(*args)
            except Exception as exc:  # redis' ConnectionError, TimeoutError, a dead socket: all mean "down"
                self._degrade(exc)
        return await getattr(self.local, name)(*args)

    async def admit(self, key: str, requests_per_minute: int | None, tokens_per_minute: int | None, tokens: int,
                    entry: str) -> Refusal | None:
        result: Refusal | None = await self._call("admit", key, requests_per_minute, tokens_per_minute, tokens,
                                                  entry)
        return result

    async def settle(self, key: str, entry: str, tokens: int) -> None:
        await self._call("settle", key, entry, tokens)

    async def remember(self, request_id: str, record: dict[str, Any], ttl_s: float) -> None:
        await self._call("remember", request_id, record, ttl_s)

    async def recall(self, request_id: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = await self._call("recall", request_id)
        if found is None and self._healthy:  # a record kept locally while Redis was down
            found = await self.local.recall(request_id)
        return found

    async def claim_feedback(self, request_id: str, record: dict[str, Any], ttl_s: float) -> bool:
        claimed: bool = await self._call("claim_feedback", request_id, record, ttl_s)
        return claimed

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            await asyncio.gather(self._probe, return_exceptions=True)
        await self.redis.close()


def build_state(settings: StateSettings, registry: CollectorRegistry) -> SharedState:
    local = LocalState(settings.remember)
    if settings.redis_url is None:
        return local
    return ResilientState(RedisState(settings.redis_url, settings.timeout_s), local, settings.retry_s, registry)


def retry_after(refusal: Refusal) -> int:
    return max(1, math.ceil(refusal.retry_after))


def replica_name(settings: StateSettings, port: int) -> str:
    """The configured replica id, else ``hostname:port`` (a pod's hostname is its name on Kubernetes)."""
    return settings.replica_id or f"{socket.gethostname()}:{port}"
