"""The request path: resolve the model, embed, decide, call the backend with its fallback chain, account.

``Triage`` receives everything it uses (settings, decider, backend pool, metrics, decision log, routing
table) so tests build it with fakes where they must and real parts where they can.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi.responses import JSONResponse, StreamingResponse
from starlette.responses import Response

from router.accounting import Accounting
from router.admission import SPILLOVER
from router.affinity import Sessions, response_scope
from router.auth import Authenticator
from router.backends import BackendClientError, BackendError, BackendPool, Stream
from router.decider import Decider
from router.decisionlog import DecisionLog
from router.errors import (
    BackendFailed,
    BackendRateLimited,
    InvalidRequest,
    NoBackendAvailable,
    NotReady,
    TriageError,
    UnknownModel,
    sse_error,
)
from router.limits import Limits, prompt_estimate
from router.metrics import Metrics
from router.policy import Decision
from router.protocol import (
    KNOB_ALIASES,
    VIRTUAL_MODEL,
    ChatCompletionRequest,
    CompletionRequest,
    ModelCard,
    ResponsesRequest,
)
from router.reasons import Reason
from router.routed import Routed
from router.routing import Routing
from router.settings import ApiKey, Settings
from router.sse import UsageTap, usage_of

log = logging.getLogger("triage.service")

Endpoint = Literal["chat", "completion", "responses"]
PATHS: dict[Endpoint, str] = {"chat": "/chat/completions", "completion": "/completions", "responses": "/responses"}
AnyRequest = ChatCompletionRequest | CompletionRequest | ResponsesRequest
PROMPT_PARAM = {"ChatCompletionRequest": "messages", "CompletionRequest": "prompt", "ResponsesRequest": "input"}


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
        limits: Limits | None = None,
    ) -> None:
        self.settings = settings
        self.routing = routing
        self.decider = decider
        self.pool = pool
        self.metrics = metrics
        self.decisions = decisions
        self.authenticator = authenticator
        self.limits = limits if limits is not None else Limits(settings.limits)
        self.sessions = Sessions(settings.sessions, self.limits.state)
        self.accounting = Accounting(settings, pool, metrics, self.limits, decisions, lambda: self.reference_model)
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
        routing = Routing.load(path or self.settings.artifact, self.decider.encoder, self.decider.refine_encoder)
        self.check_routing(routing)
        self.routing = routing
        return routing

    @property
    def reference_model(self) -> str:
        return self.settings.reference_model or self.routing.artifact.reference_model

    def models(self) -> list[ModelCard]:
        cards = [ModelCard(id=VIRTUAL_MODEL, knob=self.settings.default_knob)]
        cards += [ModelCard(id=f"{VIRTUAL_MODEL}:{alias}", knob=knob) for alias, knob in KNOB_ALIASES.items()]
        generalists = set(self.settings.generalists)
        cards += [ModelCard(id=name, role="generalist" if name in generalists else b.settings.role,
                            owned_by="triage-backend")
                  for name, b in self.pool.backends.items()]
        return cards

    def model(self, model_id: str) -> ModelCard:
        card = next((c for c in self.models() if c.id == model_id), None)
        if card is None:
            raise UnknownModel(f"model {model_id!r} does not exist; GET /v1/models lists the models", param="model")
        return card

    def ready(self) -> dict[str, Any]:
        """What /ready says: ready while one generalist can answer (out-of-domain queries need one)."""
        if not any(self.pool[g].circuit.allows() for g in self.settings.generalists if g in self.pool):
            raise NotReady("no generalist is reachable: " + ", ".join(self.settings.generalists))
        artifact = self.routing.artifact
        return {"status": "ready", "artifact": artifact.manifest.get("created_at"), "k": artifact.k,
                "backends_available": sorted(self.pool.available()),
                # in_process, redis, or degraded: Redis is configured but down, limits count per replica
                "shared_state": self.limits.state.status}

    def route_payload(self, routed: Routed) -> dict[str, Any]:
        """The body of POST /v1/route: the decision and the chain, nothing generated."""
        return {
            "request_id": routed.request_id, "backend": routed.backend,
            "backend_model": self.pool[routed.backend].settings.model, "reason": routed.reason,
            "knob": routed.knob, "cluster": routed.cluster, "ood_score": routed.ood_score,
            "expected_accuracy": routed.expected_accuracy(), "fallback_chain": routed.chain,
            "decision": routed.decision.to_dict() if routed.decision else None,
        }

    # ---- deciding --------------------------------------------------------------------------------
    def _check_limits(self, request: AnyRequest) -> None:
        limits = self.settings.limits
        if isinstance(request, ChatCompletionRequest) and len(request.messages) > limits.max_messages:
            raise InvalidRequest(f"too many messages (limit {limits.max_messages})", param="messages")
        if request.prompt_chars() > limits.max_prompt_chars:
            raise InvalidRequest(f"the prompt is too long (limit {limits.max_prompt_chars} characters)",
                                 param=PROMPT_PARAM[type(request).__name__])

    async def route(self, request: AnyRequest, request_id: str | None = None, key: ApiKey | None = None,
                    session_header: str | None = None) -> Routed:
        self._check_limits(request)
        request_id = request_id or uuid.uuid4().hex
        model = request.model
        if model in self.pool:
            return Routed(request_id, backend=model, reason=Reason.PINNED, chain=[model])
        if model != VIRTUAL_MODEL and not model.startswith(VIRTUAL_MODEL + ":"):
            raise UnknownModel(f"model {model!r} does not exist; GET /v1/models lists the models", param="model")
        knob = parse_knob(model, self.settings.default_knob)
        if request.triage is not None and request.triage.knob is not None:
            knob = request.triage.knob
        if isinstance(request, CompletionRequest) and request.token_ids():
            # Token ids carry no text to place: the default route, the generalists (never a specialist blind).
            chain = [g for g in self.settings.generalists if g in self.pool]
            return Routed(request_id, backend=chain[0], reason=Reason.NO_TEXT, knob=knob, chain=chain)
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
        routed = Routed(request_id, backend=chain[0], reason=decision.reason, knob=knob, cluster=decision.cluster,
                        ood_score=decision.ood_score, decision=decision, chain=chain, decision_seconds=elapsed)
        if request.triage is not None and request.triage.max_queue_ms is not None:
            routed.max_queue_ms = request.triage.max_queue_ms
        if self.settings.sessions.enabled:
            cause = await self.sessions.follow(routed, request, key, session_header, set(self.pool.backends))
            if cause is not None:
                self.metrics.session_reroutes.labels(cause).inc()
        return routed

    def _chain(self, decision: Decision) -> list[str]:
        """The chosen backend, up to ``retries`` next-best eligible ones, and the generalist last."""
        chain = [m for m in [decision.model, *decision.fallbacks()] if m in self.pool]
        chain = list(dict.fromkeys(chain))[: 1 + self.settings.health.retries]
        # Then the generalists in turn: out-of-domain and cliff decisions never fall back to a specialist.
        chain += [g for g in self.settings.generalists if g in self.pool and g not in chain]
        return chain

    # ---- answering -------------------------------------------------------------------------------
    async def complete(self, request: AnyRequest, endpoint: Endpoint, key: ApiKey | None = None,
                       request_id: str | None = None, session_header: str | None = None) -> Response:
        # Admission: the request's whole token bound is reserved before any work, settled in _account.
        reservation = await self.limits.reserve(key, self.limits.bound(request, key))
        try:
            routed = await self.route(request, request_id, key, session_header)
        except BaseException:
            self.limits.settle(reservation, 0)
            raise
        routed.key, routed.reservation, routed.prompt_estimate = key, reservation, prompt_estimate(request)
        started = time.perf_counter()
        wants_stream = bool(request.stream)
        client_usage = bool(request.stream_options and request.stream_options.include_usage)

        def body_for(name: str) -> dict[str, Any]:
            body = request.backend_body(self.pool[name].settings.model)
            if wants_stream and endpoint != "responses":  # always ask for usage: cost accounting needs it
                body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
            return body

        try:
            result = await self._call(routed, PATHS[endpoint], body_for, wants_stream)
        except BackendClientError as exc:
            self.accounting.account(routed, started, None, "client_error")
            return JSONResponse(exc.body, status_code=exc.status, headers=routed.headers())
        except TriageError:
            self.accounting.account(routed, started, None, "backend_error")
            raise
        # Before the answer leaves: feedback may come through another replica as soon as the client has it.
        await self.limits.state.remember(routed.request_id, {
            "backend": routed.backend, "cluster": routed.cluster, "key": routed.key.sha256 if routed.key else None,
        }, self.settings.state.feedback_window_s)
        if routed.session is not None:
            domain = routed.decision.domain if routed.decision is not None else ""
            await self.sessions.remember(routed.session.scope, routed.backend, domain)
        if isinstance(result, Stream):
            return StreamingResponse(
                self._relay(routed, result, started, client_usage),
                media_type="text/event-stream",
                headers={**routed.headers(), "cache-control": "no-cache"},
            )
        if endpoint == "responses" and isinstance(result.get("id"), str):
            await self.sessions.remember(response_scope(result["id"], key), routed.backend)
        self.accounting.account(routed, started, usage_of(result.get("usage")), "ok")
        if "model" in result:  # the caller sees the backend Triage chose, not the backend's served model id
            result["model"] = routed.backend
        return JSONResponse(result, headers=routed.headers())

    async def _call(
        self, routed: Routed, path: str, body_for: Any, stream: bool
    ) -> dict[str, Any] | Stream:
        failures: list[str] = []
        if all(self.pool[name].circuit.state == "open" for name in routed.chain):
            raise self._none_up(routed.chain)
        budget = routed.max_queue_ms if routed.max_queue_ms is not None else self.settings.pool.max_queue_ms
        if budget is not None and routed.decision is not None:  # load-aware: room within the queue budget
            placement = await self.pool.admission.place(routed.decision, routed.chain, budget)
            if placement.spilled:
                routed.chain, routed.backend, routed.reason = placement.chain, placement.chain[0], SPILLOVER
        last_error: BackendError | None = None
        for position, name in enumerate(routed.chain):
            backend = self.pool[name]
            last = position == len(routed.chain) - 1
            if not backend.circuit.allows() and not last:
                failures.append(f"backend {name!r} is down")
                continue
            try:
                if stream:
                    opened = await backend.open_stream(path, body_for(name))
                    result: dict[str, Any] | Stream = opened
                    replica = opened.replica
                else:
                    answer = await backend.post_json(path, body_for(name))
                    result, replica = answer.data, answer.replica
            except BackendError as exc:
                failures.append(str(exc))
                last_error = exc
                log.warning("request %s: %s", routed.request_id, exc)
                continue
            routed.replica = replica.label
            if position > 0:
                errored = bool(last_error)
                routed.backend = name
                routed.reason = Reason.FALLBACK_AFTER_ERROR if errored else Reason.BACKEND_DOWN
            return result
        retry_after = getattr(last_error, "retry_after", None)
        if getattr(last_error, "status", None) == 429:  # the last backend is busy: say so, with its retry-after
            raise BackendRateLimited("the backend is over capacity: " + "; ".join(failures),
                                     headers={"retry-after": str(max(1, math.ceil(retry_after or 1)))})
        raise BackendFailed("no backend could answer: " + "; ".join(failures))

    def _none_up(self, chain: list[str]) -> NoBackendAvailable:
        seconds = max(1, int(self.settings.health.open_seconds))
        return NoBackendAvailable(
            "no backend that may answer this request is up (" + ", ".join(chain) + "): every circuit is open; "
            f"retry after {seconds} s", headers={"retry-after": str(seconds)})

    async def _relay(
        self, routed: Routed, stream: Stream, started: float, client_usage: bool
    ) -> AsyncIterator[bytes]:
        served = self.pool[routed.backend].settings.model
        tap = UsageTap(forward_usage_chunk=client_usage, model=(served, routed.backend))
        outcome, accounted, remembered = "ok", False, False

        def finish(result: str) -> None:
            # Account before the client sees the end of the stream, so metrics are in place when it reads them.
            nonlocal outcome, accounted
            outcome, accounted = result, True
            self.accounting.account(routed, started, tap.usage, outcome)

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
                if tap.response_id is not None and not remembered:  # previous_response_id comes back here
                    remembered = True
                    await self.sessions.remember(response_scope(tap.response_id, routed.key), routed.backend)
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
            stream.replica.circuit.record_failure()
            if not accounted:
                finish("backend_error")
            yield sse_error(BackendFailed(f"backend {routed.backend!r} failed mid-stream"))
        finally:
            await stream.aclose()
            if not accounted:
                # A dropped stream is charged what it already relayed: the prompt and the tokens sent.
                usage = tap.usage or (tap.relayed_usage(routed.prompt_estimate) if outcome == "cancelled" else None)
                self.accounting.account(routed, started, usage, outcome)
