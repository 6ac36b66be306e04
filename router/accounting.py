"""Accounting for finished requests: metrics, the key's token spend (settling its reservation), the decision log,
and the feedback that joins a later outcome to a past request.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from router.backends import BackendPool
from router.decisionlog import DecisionLog
from router.errors import InvalidRequest, NotFound
from router.limits import Limits
from router.metrics import Metrics
from router.reasons import FALLBACKS
from router.routed import Routed
from router.settings import ApiKey, Settings


class Accounting:
    def __init__(self, settings: Settings, pool: BackendPool, metrics: Metrics, limits: Limits,
                 decisions: DecisionLog, reference_model: Callable[[], str]) -> None:
        self.settings = settings
        self.pool = pool
        self.metrics = metrics
        self.limits = limits
        self.decisions = decisions
        self.reference_model = reference_model

    def account(self, routed: Routed, started: float, usage: dict[str, Any] | None, outcome: str) -> None:
        """Metrics, the key's token spend and the decision log for one finished request."""
        metrics = self.metrics
        backend = routed.backend
        seconds = time.perf_counter() - started + routed.decision_seconds
        metrics.requests.labels(backend, str(routed.cluster), routed.reason, outcome).inc()
        metrics.request_seconds.labels(backend).observe(seconds)
        if routed.ood_score is not None:
            metrics.ood_score.observe(routed.ood_score)
        if routed.reason in FALLBACKS:
            metrics.fallbacks.labels(routed.reason).inc()
        accuracy = routed.expected_accuracy()
        if accuracy is not None:
            metrics.expected_accuracy.labels(backend).observe(accuracy)
        prompt = int((usage or {}).get("prompt_tokens") or 0)
        completion = int((usage or {}).get("completion_tokens") or 0)
        cost = self.pool[backend].settings.price_per_mtok.cost(prompt, completion)
        self.limits.settle(routed.reservation, prompt + completion)
        if usage:
            metrics.tokens.labels(backend, "prompt").inc(prompt)
            metrics.tokens.labels(backend, "completion").inc(completion)
            metrics.cost_usd.labels(backend).inc(cost)
            reference = self.reference_model()
            if reference in self.pool:
                metrics.counterfactual_cost_usd.inc(self.pool[reference].settings.price_per_mtok.cost(
                    prompt, completion))
        self.decisions.decision({
            "request_id": routed.request_id, "time": time.time(), "backend": backend, "cluster": routed.cluster,
            "knob": routed.knob, "ood_score": routed.ood_score, "reason": routed.reason, "outcome": outcome,
            "expected_accuracy": accuracy, "prompt_tokens": prompt, "completion_tokens": completion,
            "cost_usd": cost, "latency_s": round(seconds, 6), "key": routed.key.name if routed.key else None,
        })

    async def feedback(self, request_id: str, score: float, key: ApiKey | None) -> None:
        """Records a score for a request this key made (or any, with the admin key), once, within the window.
        Another key's request id is answered like an unknown one: ids are not confirmed to other keys."""
        record = await self.limits.state.recall(request_id)
        owner = record.get("key") if record is not None else None
        if record is None or (key is not None and not key.admin and owner != key.sha256):
            window = self.settings.state.feedback_window_s
            raise NotFound(f"no request with id {request_id!r} made with this key in the last {window:g} s",
                           param="request_id")
        backend, cluster = str(record["backend"]), int(record["cluster"])
        now = time.time()
        claim = {"score": score, "time": now, "key": key.name if key else None}
        if not await self.limits.state.claim_feedback(request_id, claim, self.settings.state.feedback_window_s):
            raise InvalidRequest(f"feedback for request {request_id!r} was already recorded", param="request_id")
        self.metrics.feedback_score.labels(backend).observe(score)
        self.metrics.feedback.labels(backend).inc()
        self.decisions.feedback(request_id, score, now, backend=backend, cluster=cluster,
                                key=key.name if key else None)
