"""Prometheus metrics on an injected registry. Names and labels: docs/contracts.md.

Labels come only from small fixed sets (backend names from the config, cluster ids from the artifact,
reasons, outcomes): never query text or a request id.

Under ``triage serve --workers N`` every worker writes its samples to files in ``PROMETHEUS_MULTIPROC_DIR``
(prometheus-client's multiprocess mode, set up by :mod:`router.server`) and ``/metrics`` reads them all, whichever
worker answers: counters and histograms are summed over the workers, dead ones included, and each gauge is
combined over the live workers as its ``multiprocess_mode`` says (a count of requests in flight is summed, a
health flag is the lowest any worker sees, a queue estimate the highest).
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

from router.reasons import FALLBACKS

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
UNIT_BUCKETS = tuple(round(0.1 * i, 1) for i in range(1, 11))
CIRCUIT_STATES = {"closed": 0, "half_open": 1, "open": 2}
MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"


def exposition(registry: CollectorRegistry) -> bytes:
    """The text ``/metrics`` serves: this registry's samples, or under worker processes every worker's."""
    if os.environ.get(MULTIPROC_DIR):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "triage_requests", "Routed requests", ["backend", "cluster", "reason", "outcome"], registry=registry
        )
        self.decision_seconds = Histogram(
            "triage_decision_seconds", "Time to decide (embed + assign + policy)", buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.request_seconds = Histogram(
            "triage_request_seconds", "End-to-end request time", ["backend"], buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.tokens = Counter("triage_tokens", "Tokens by backend", ["backend", "kind"], registry=registry)
        self.cost_usd = Counter("triage_cost_usd", "Spend (usage x prices)", ["backend"], registry=registry)
        self.counterfactual_cost_usd = Counter(
            "triage_counterfactual_cost_usd", "Spend had the reference model answered every request",
            registry=registry,
        )
        self.expected_accuracy = Histogram(
            "triage_expected_accuracy", "Calibrated accuracy of each decision", ["backend"],
            buckets=UNIT_BUCKETS, registry=registry,
        )
        self.ood_score = Histogram(
            "triage_ood_score", "Out-of-domain score of routed queries",
            buckets=(0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.5, 2.0), registry=registry,
        )
        self.fallbacks = Counter("triage_fallbacks", "Fallbacks by reason", ["reason"], registry=registry)
        self.session_reroutes = Counter(
            "triage_session_reroutes", "Later turns of a conversation sent away from its backend, by cause "
            "(ood, cliff, down, moved, fresh)", ["cause"], registry=registry)
        self.ood_refined = Counter("triage_ood_refined", "Decisions whose OOD call the artifact's refine "
                                   "embedder made (a tiered artifact only)", registry=registry)
        self.backend_up = Gauge("triage_backend_up", "1 while some replica is offered to the policy", ["backend"],
                                multiprocess_mode="livemin", registry=registry)
        self.circuit_state = Gauge("triage_circuit_state", "0 closed, 1 half-open, 2 open", ["backend"],
                                   multiprocess_mode="livemax", registry=registry)
        self.feedback_score = Histogram(
            "triage_feedback_score", "Observed outcome from feedback", ["backend"], buckets=UNIT_BUCKETS,
            registry=registry,
        )
        self.feedback = Counter("triage_feedback", "Feedback calls joined to a decision", ["backend"],
                                registry=registry)
        # Replicas: the label is the replica's index in the backend's configured (or discovered, sorted) list.
        self.replica_up = Gauge("triage_replica_up", "1 while the replica is offered to the policy (neither "
                                "suspect after a failed call nor open)", ["backend", "replica"],
                                multiprocess_mode="livemin", registry=registry)
        self.replica_in_flight = Gauge("triage_replica_in_flight", "Requests Triage has in flight on the replica",
                                       ["backend", "replica"], multiprocess_mode="livesum", registry=registry)
        self.replica_requests = Counter(
            "triage_replica_requests", "Calls to a replica by outcome (ok, client_error, failed, busy)",
            ["backend", "replica", "outcome"], registry=registry)
        self.replica_queue_seconds = Gauge(
            "triage_replica_queue_seconds", "Expected wait for a free slot on the replica (load estimate)",
            ["backend", "replica"], multiprocess_mode="livemax", registry=registry)
        self.replica_waiting = Gauge("triage_replica_waiting", "Requests queued on the replica (vLLM's "
                                     "num_requests_waiting, or Triage's beyond max_concurrency)",
                                     ["backend", "replica"], multiprocess_mode="livemax", registry=registry)
        self.spillover = Counter("triage_spillover", "Requests sent to a less preferred eligible model because "
                                 "the preferred one's queue was over budget", ["from", "to"], registry=registry)
        self.accuracy_given_up = Histogram(
            "triage_spillover_accuracy_given_up", "Expected accuracy of the preferred model minus the one that "
            "answered, per spill-over", buckets=(0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0), registry=registry)
        self.admission_waiting = Gauge("triage_admission_waiting", "Requests waiting for room in the pool",
                                       multiprocess_mode="livesum", registry=registry)
        self.admission_rejected = Counter("triage_admission_rejected", "Requests answered 429 because every "
                                          "eligible model was over budget", ["reason"], registry=registry)

    def declare_backends(self, names: list[str]) -> None:
        """Create each backend's series up front so dashboards show zeros, not gaps."""
        for name in names:
            self.backend_up.labels(name).set(1)
            self.circuit_state.labels(name).set(0)
            self.cost_usd.labels(name)
            for kind in ("prompt", "completion"):
                self.tokens.labels(name, kind)
        for reason in FALLBACKS:
            self.fallbacks.labels(reason)
        self.counterfactual_cost_usd.inc(0)

    def declare_replicas(self, backend: str, replicas: list[str]) -> None:
        for replica in replicas:
            self.replica_up.labels(backend, replica).set(1)
            self.replica_in_flight.labels(backend, replica).set(0)
            self.replica_queue_seconds.labels(backend, replica).set(0)
            self.replica_waiting.labels(backend, replica).set(0)
        for reason in ("queue_full", "timeout"):
            self.admission_rejected.labels(reason)

    def set_circuit(self, backend: str, state: str) -> None:
        self.circuit_state.labels(backend).set(CIRCUIT_STATES[state])
