"""Circuits over real HTTP: a dead backend leaves the policy, and comes back through a half-open probe.

The gauge ``triage_circuit_state`` is read from ``/metrics`` the way Prometheus would, not from the registry.
"""

from __future__ import annotations

import time

import httpx

from bench.harness.fleet import metric_values
from tests.reliability.rig import Rig, RigFactory, wait_for

OPEN, HALF_OPEN, CLOSED = 2.0, 1.0, 0.0


def circuit(rig: Rig, backend: str) -> float | None:
    text = httpx.get(rig.url + "/metrics", timeout=10).text
    return metric_values(text, "triage_circuit_state").get(f'backend="{backend}"')


def test_the_health_probe_opens_a_dead_backends_circuit_and_closes_it_when_it_returns(rig: RigFactory) -> None:
    # open_seconds is long so that the circuit stays open (not half-open) while the test looks at it.
    with rig(health={"probe_interval_s": 0.2, "failure_threshold": 2, "open_seconds": 5.0}) as r:
        model, victim = r.specialist_route()  # the generalist down would make /ready fail, rightly
        r.fakes[victim].kill()
        wait_for(lambda: circuit(r, victim) == OPEN, what=f"the circuit of {victim} to open")
        # While it is open, the policy does not offer it: requests go elsewhere without trying it first.
        response = r.chat(model=model)
        assert response.status_code == 200
        assert response.headers["x-triage-backend"] != victim
        assert response.headers["x-triage-reason"] != "fallback_after_error"
        assert victim not in httpx.get(r.url + "/ready", timeout=10).json()["backends_available"]
        r.fakes[victim].restart()
        wait_for(lambda: circuit(r, victim) == CLOSED, what=f"the circuit of {victim} to close")
        assert r.first_choice(model=model) == victim
        assert r.chat(model=model).headers["x-triage-backend"] == victim


def test_a_half_open_request_closes_the_circuit_after_open_seconds(rig: RigFactory) -> None:
    # No background probe: only client traffic moves the circuit, so every transition is the request's doing.
    with rig(health={"probe_interval_s": 0, "failure_threshold": 2, "open_seconds": 1.0}) as r:
        name = r.artifact.models[0]
        r.fakes[name].configure(fault="500")
        for _ in range(2):
            assert r.chat(model=name).status_code == 502  # pinned: no fallback, the failure is the client's to see
        assert circuit(r, name) == OPEN
        r.fakes[name].configure(fault=None)
        time.sleep(1.2)
        response = r.chat(model=name)  # the half-open trial
        assert response.status_code == 200 and response.headers["x-triage-backend"] == name
        assert circuit(r, name) == CLOSED
        assert r.metric("triage_backend_up", {"backend": name}) == 1


def test_a_failed_half_open_trial_opens_the_circuit_again(rig: RigFactory) -> None:
    with rig(health={"probe_interval_s": 0, "failure_threshold": 2, "open_seconds": 1.0}) as r:
        name = r.artifact.models[0]
        r.fakes[name].configure(fault="500")
        for _ in range(2):
            r.chat(model=name)
        time.sleep(1.2)
        assert r.chat(model=name).status_code == 502  # the trial fails
        assert circuit(r, name) == OPEN
        assert r.metric("triage_backend_up", {"backend": name}) == 0


def test_a_backend_whose_probe_passes_but_whose_completions_fail_stays_open(rig: RigFactory) -> None:
    # A vLLM whose engine died still answers GET /v1/models: the probe must not undo what requests learned.
    with rig(health={"probe_interval_s": 0.2, "failure_threshold": 2, "open_seconds": 30.0}) as r:
        name = r.artifact.models[1]
        r.fakes[name].configure(fault="500", fault_scope="completions")
        for _ in range(2):
            assert r.chat(model=name).status_code == 502
        assert circuit(r, name) == OPEN
        time.sleep(1.5)  # several probes, all answered 200
        assert circuit(r, name) == OPEN
