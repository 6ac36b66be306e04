from router.circuit import Circuit


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_consecutive_failures_then_half_open_then_closes() -> None:
    clock, changes = Clock(), list[str]()
    circuit = Circuit(failure_threshold=3, open_seconds=10, clock=clock, on_change=changes.append)
    circuit.record_failure()
    circuit.record_failure()
    assert circuit.state == "closed"
    circuit.record_failure()
    assert circuit.state == "open" and not circuit.allows()
    clock.now = 10
    assert circuit.state == "half_open" and circuit.allows()
    circuit.record_success()
    assert circuit.state == "closed"
    assert changes == ["open", "half_open", "closed"]


def test_one_failure_makes_it_suspect_at_once_until_a_success() -> None:
    clock, health = Clock(), list[bool]()
    circuit = Circuit(failure_threshold=3, open_seconds=10, clock=clock, on_health=health.append)
    assert circuit.allows()
    circuit.record_failure()
    assert circuit.state == "closed" and circuit.suspect and not circuit.allows()
    circuit.record_success()
    assert circuit.allows()
    assert health == [False, True]  # told on a change only


def test_a_server_that_answers_badly_is_not_suspect_and_counts_toward_the_threshold() -> None:
    circuit = Circuit(failure_threshold=2, open_seconds=10, clock=Clock())
    circuit.record_failure(suspect=False)
    assert circuit.allows() and not circuit.suspect
    circuit.record_failure(suspect=False)
    assert circuit.state == "open" and not circuit.allows()


def test_suspicion_lapses_after_open_seconds_without_news() -> None:
    clock = Clock()
    circuit = Circuit(failure_threshold=3, open_seconds=10, clock=clock)
    circuit.record_failure()
    clock.now = 9.9
    assert not circuit.allows()
    clock.now = 10
    assert circuit.allows() and circuit.state == "closed"


def test_a_live_probe_clears_suspicion_but_never_closes_an_open_circuit() -> None:
    clock = Clock()
    circuit = Circuit(failure_threshold=2, open_seconds=10, clock=clock)
    circuit.record_failure()
    circuit.record_alive()
    assert circuit.allows()
    circuit.record_failure()  # the count stood: this one opens it
    assert circuit.state == "open"
    circuit.record_alive()
    assert circuit.state == "open" and not circuit.allows()
    clock.now = 10
    circuit.record_alive()  # half-open: the probe's success closes it
    assert circuit.state == "closed" and circuit.allows()


def test_a_failed_half_open_probe_reopens_at_once() -> None:
    clock = Clock()
    circuit = Circuit(failure_threshold=2, open_seconds=5, clock=clock)
    circuit.record_failure()
    circuit.record_failure()
    clock.now = 6
    assert circuit.state == "half_open"
    circuit.record_failure()
    assert circuit.state == "open"


def test_success_resets_the_failure_count() -> None:
    circuit = Circuit(failure_threshold=2)
    circuit.record_failure()
    circuit.record_success()
    circuit.record_failure()
    assert circuit.state == "closed"
