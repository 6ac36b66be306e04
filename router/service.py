"""The request path: resolve the model, embed, decide, call the backend with its fallback chain, account.

``Triage`` receives everything it uses (settings, decider, backend pool, metrics, decision log, routing
table) so tests build it with fakes where they must and real parts where they can.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote

from fastapi.responses import JSONResponse, StreamingResponse
from starlette.responses import Response

from router.artifact import Artifact
from router.auth import Authenticator
from router.backends import BackendClientError, BackendError, BackendPool, Stream
from router.decider import Decider
from router.decisionlog import DecisionLog
from router.embedder import weights_of
from router.errors import BackendFailed, InvalidRequest, TriageError, UnknownModel, sse_error
from router.metrics import Metrics
from router.policy import Decision, Policy
from router.protocol import KNOB_ALIASES, VIRTUAL_MODEL, ChatCompletionRequest, CompletionRequest, ModelCard
from router.settings import ApiKey, Settings
from router.sse import UsageTap

log = logging.getLogger("triage.service")

Endpoint = Literal["chat", "completion"]
PATHS: dict[Endpoint, str] = {"chat": "/chat/completions", "completion": "/completions"}
AnyRequest = ChatCompletionRequest | CompletionRequest


class Routing:
    """The artifact and the policy built from it: swapped together, atomically, on reload."""

    def __init__(self, artifact: Artifact) -> None:
        self.artifact = artifact
        self.policy = Policy(artifact)


@dataclass
class Routed:
    """What Triage decided for one request, and what happened to it."""

    request_id: str
    backend: str
    reason: str
    knob: float | None = None
    cluster: int = -1
    ood_score: float | None = None
    decision: Decision | None = None
    chain: list[str] = field(default_factory=list)
    decision_seconds: float = 0.0
    key: ApiKey | None = None

    def expected_accuracy(self) -> float | None:
        if self.decision is None:
            return None
        return next((c.expected_accuracy for c in self.decision.candidates if c.model == self.backend), None)

    def headers(self) -> dict[str, str]:
        headers = {"x-request-id": self.request_id, "x-triage-backend": self.backend,
                   "x-triage-reason": self.reason, "x-triage-cluster": str(self.cluster)}
        if self.knob is not None:
            headers["x-triage-knob"] = f"{self.knob:g}"
        if self.ood_score is not None:
            headers["x-triage-ood-score"] = f"{self.ood_score:.4f}"
        accuracy = self.expected_accuracy()
        if accuracy is not None:
            headers["x-triage-expected-accuracy"] = f"{accuracy:.4f}"
        if self.decision is not None and self.decision.domain:
            # Domain names come from calibration data: percent-encoded, a header value stays ASCII.
            headers["x-triage-domain"] = quote(self.decision.domain, safe="")
        return headers


def parse_knob(model: str, default: float) -> float:
    suffix = model.split(":", 1)[1] if ":" in model else ""
    if not suffix:
        return default
    if suffix in KNOB_ALIASES:
        return KNOB_ALIASES[suffix]
    try:
        knob = float(suffix)
    except ValueError:
        knob = float("nan")
    if not 0.0 <= knob <= 1.0:
        raise InvalidRequest(
            f"model {model!r}: the knob after 'triage:' must be quality, balanced, cost or a number in [0, 1]",
            param="model",
        )
    return knob


class Triage:
    def __init__(
        self,
        settings: Settings,
        routing: Routing,
        decider: Decider,
        pool: BackendPool,
        metrics: Metrics,
        decisions: DecisionLog,
        authenticator: Authenticator,
    ) -> None:
        self.settings = settings
        self.routing = routing
        self.decider = decider
        self.pool = pool
        self.metrics = metrics
        self.decisions = decisions
        self.authenticator = authenticator
        self.check_routing(routing)

    # ---- routing table ---------------------------------------------------------------------------
    def check_routing(self, routing: Routing) -> None:
        artifact = routing.artifact
        if artifact.generalist != self.settings.generalist_name:
            raise TriageError(
                f"the artifact was calibrated with generalist {artifact.generalist!r} but the config names "
                f"{self.settings.generalist_name!r}"
            )
        missing = [m for m in artifact.models if m not in self.pool]
        if missing:
            log.warning("artifact models without a backend (never routed to): %s", ", ".join(missing))

    def reload(self, path: str | None = None) -> Routing:
        """Validate the new artifact fully, then swap; on any error the current one keeps serving."""
        artifact = Artifact.load(
            path or self.settings.artifact, embedder_name=self.decider.name, embedder_dim=self.decider.dim,
            embedder_weights=weights_of(self.decider.encoder),
        )
        self.decider.check(artifact)
        routing = Routing(artifact)
        self.check_routing(routing)
        self.routing = routing
        return routing

    @property
    def reference_model(self) -> str:
        return self.settings.reference_model or self.routing.artifact.reference_model

    def models(self) -> list[ModelCard]:
        cards = [ModelCard(id=VIRTUAL_MODEL, knob=self.settings.default_knob)]
        cards += [ModelCard(id=f"{VIRTUAL_MODEL}:{alias}", knob=knob) for alias, knob in KNOB_ALIASES.items()]
        cards += [ModelCard(id=name, role=b.settings.role, owned_by="triage-backend")
                  for name, b in self.pool.backends.items()]
        return cards

    # ---- deciding --------------------------------------------------------------------------------
    def _check_limits(self, request: AnyRequest) -> None:
        limits = self.settings.limits
        if isinstance(request, ChatCompletionRequest) and len(request.messages) > limits.max_messages:
            raise InvalidRequest(f"too many messages (limit {limits.max_messages})", param="messages")
        if request.prompt_chars() > limits.max_prompt_chars:
            raise InvalidRequest(f"the prompt is too long (limit {limits.max_prompt_chars} characters)",
                                 param="messages" if isinstance(request, ChatCompletionRequest) else "prompt")

    async def route(self, request: AnyRequest) -> Routed:
        self._check_limits(request)
        request_id = uuid.uuid4().hex
        model = request.model
        if model in self.pool:
            return Routed(request_id, backend=model, reason="pinned", chain=[model])
        if model != VIRTUAL_MODEL and not model.startswith(VIRTUAL_MODEL + ":"):
            raise UnknownModel(f"model {model!r} does not exist; GET /v1/models lists the models", param="model")
        knob = parse_knob(model, self.settings.default_knob)
        if request.triage is not None and request.triage.knob is not None:
            knob = request.triage.knob
        text = request.routing_text()
        if not text.strip():
            raise InvalidRequest("nothing to route: the last user message is empty", param="messages")

        started = time.perf_counter()
        routing = self.routing
        available = self.pool.available() & set(routing.artifact.models)
        try:
            decision = await self.decider.decide(text, routing.policy, knob, available)
        except ValueError as exc:  # the policy refused the knob: the caller's fault, said plainly
            raise InvalidRequest(str(exc), param="triage.knob") from None
        elapsed = time.perf_counter() - started
        self.metrics.decision_seconds.observe(elapsed)
        if decision.ood_refined:
            self.metrics.ood_refined.inc()
        chain = self._chain(decision)
        return Routed(request_id, backend=chain[0], reason=decision.reason, knob=knob, cluster=decision.cluster,
                      ood_score=decision.ood_score, decision=decision, chain=chain, decision_seconds=elapsed)

    def _chain(self, decision: Decision) -> list[str]:
        """The chosen backend, up to ``retries`` next-best eligible ones, and the generalist last."""
        generalist = self.settings.generalist_name
        chain = [m for m in [decision.model, *decision.fallbacks()] if m in self.pool]
        chain = list(dict.fromkeys(chain))[: 1 + self.settings.health.retries]
        if generalist not in chain:
            chain.append(generalist)
        return chain

    # ---- answering -------------------------------------------------------------------------------
    async def complete(self, request: AnyRequest, endpoint: Endpoint, key: ApiKey | None = None) -> Response:
        routed = await self.route(request)
        routed.key = key
        started = time.perf_counter()
        wants_stream = bool(request.stream)
        client_usage = bool(request.stream_options and request.stream_options.include_usage)

        def body_for(name: str) -> dict[str, Any]:
            body = request.backend_body(self.pool[name].settings.model)
            if wants_stream:  # always ask for usage: cost accounting needs it
                body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
            return body

        try:
            result = await self._call(routed, PATHS[endpoint], body_for, wants_stream)
        except BackendClientError as exc:
            self._account(routed, started, None, "client_error")
            return JSONResponse(exc.body, status_code=exc.status, headers=routed.headers())
        except TriageError:
            self._account(routed, started, None, "backend_error")
            raise
        if isinstance(result, Stream):
            return StreamingResponse(
                self._relay(routed, result, started, client_usage),
                media_type="text/event-stream",
                headers={**routed.headers(), "cache-control": "no-cache"},
            )
        self._account(routed, started, result.get("usage"), "ok")
        return JSONResponse(result, headers=routed.headers())

    async def _call(
        self, routed: Routed, path: str, body_for: Any, stream: bool
    ) -> dict[str, Any] | Stream:
        failures: list[str] = []
        for position, name in enumerate(routed.chain):
            backend = self.pool[name]
            last = position == len(routed.chain) - 1
            if not backend.circuit.allows() and not last:
                failures.append(f"backend {name!r} circuit open")
                self.metrics.fallbacks.labels("circuit_open").inc()
                continue
            try:
                if stream:
                    result: dict[str, Any] | Stream = await backend.open_stream(path, body_for(name))
                else:
                    result = await backend.post_json(path, body_for(name))
            except BackendError as exc:
                failures.append(str(exc))
                log.warning("request %s: %s", routed.request_id, exc)
                continue
            if position > 0 or failures:
                routed.backend, routed.reason = name, "fallback_after_error"
                self.metrics.fallbacks.labels("backend_error").inc()
            return result
        raise BackendFailed("no backend could answer: " + "; ".join(failures))

    async def _relay(
        self, routed: Routed, stream: Stream, started: float, client_usage: bool
    ) -> AsyncIterator[bytes]:
        tap = UsageTap(forward_usage_chunk=client_usage)
        outcome, accounted = "ok", False

        def finish(result: str) -> None:
            # Account before the client sees the end of the stream, so metrics are in place when it reads them.
            nonlocal outcome, accounted
            outcome, accounted = result, True
            self._account(routed, started, tap.usage, outcome)

        # A backend that stalls mid-stream must not hang the client: the whole stream has a deadline.
        deadline = asyncio.get_running_loop().time() + self.pool[routed.backend].settings.timeouts.total
        try:
            chunks = stream.chunks()
            while True:
                async with asyncio.timeout_at(deadline):  # never around a yield: it would cancel the writer
                    chunk = await anext(chunks, None)
                if chunk is None:
                    break
                out = tap.feed(chunk)
                if tap.done:
                    finish("ok")
                if out:
                    yield out
            if not tap.done:
                finish("backend_error")
                yield sse_error(BackendFailed(f"backend {routed.backend!r} ended the stream early"))
        except (asyncio.CancelledError, GeneratorExit):
            outcome = "cancelled"  # the client went away: closing the stream cancels the backend call
            raise
        except Exception:
            log.warning("request %s: backend %s failed mid-stream", routed.request_id, routed.backend)
            self.pool[routed.backend].circuit.record_failure()
            if not accounted:
                finish("backend_error")
            yield sse_error(BackendFailed(f"backend {routed.backend!r} failed mid-stream"))
        finally:
            await stream.aclose()
            if not accounted:
                self._account(routed, started, tap.usage, outcome)

    # ---- accounting ------------------------------------------------------------------------------
    def _account(self, routed: Routed, started: float, usage: dict[str, Any] | None, outcome: str) -> None:
        metrics = self.metrics
        backend = routed.backend
        seconds = time.perf_counter() - started + routed.decision_seconds
        metrics.requests.labels(backend, str(routed.cluster), routed.reason, outcome).inc()
        metrics.request_seconds.labels(backend).observe(seconds)
        if routed.ood_score is not None:
            metrics.ood_score.observe(routed.ood_score)
        fallback = {"ood_fallback": "ood", "ood_margin": "ood_margin", "cliff": "cliff"}.get(routed.reason)
        if fallback is not None:
            metrics.fallbacks.labels(fallback).inc()
        accuracy = routed.expected_accuracy()
        if accuracy is not None:
            metrics.expected_accuracy.labels(backend).observe(accuracy)
        prompt = int((usage or {}).get("prompt_tokens") or 0)
        completion = int((usage or {}).get("completion_tokens") or 0)
        cost = self.pool[backend].settings.price_per_mtok.cost(prompt, completion)
        self.authenticator.spend_tokens(routed.key, prompt + completion)
        if usage:
            metrics.tokens.labels(backend, "prompt").inc(prompt)
            metrics.tokens.labels(backend, "completion").inc(completion)
            metrics.cost_usd.labels(backend).inc(cost)
            reference = self.reference_model
            if reference in self.pool:
                metrics.counterfactual_cost_usd.inc(self.pool[reference].settings.price_per_mtok.cost(
                    prompt, completion))
        self.decisions.decision({
            "request_id": routed.request_id, "time": time.time(), "backend": backend, "cluster": routed.cluster,
            "knob": routed.knob, "ood_score": routed.ood_score, "reason": routed.reason, "outcome": outcome,
            "expected_accuracy": accuracy, "prompt_tokens": prompt, "completion_tokens": completion,
            "cost_usd": cost, "latency_s": round(seconds, 6),
        })

    def feedback(self, request_id: str, score: float) -> bool:
        known = self.decisions.lookup(request_id)
        if known is None:
            return False
        backend, _cluster = known
        self.metrics.feedback_score.labels(backend).observe(score)
        self.metrics.feedback.labels(backend).inc()
        self.decisions.feedback(request_id, score, time.time())
        return True
