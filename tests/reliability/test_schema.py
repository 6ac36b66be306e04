"""Property-based API fuzzing with schemathesis against the app's own ``/openapi.json``: zero 5xx.

Every generated request (valid and invalid bodies, odd types, huge numbers, unknown fields) must be answered
without a server error. Backends are healthy fakes, so a 5xx here is the router's own. Bounded: a fixed
number of examples per operation, derandomized so CI runs the same cases every time.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402  (only once schemathesis, which brings it, is there)
from schemathesis.checks import not_a_server_error  # noqa: E402

from tests.reliability.rig import RigFactory  # noqa: E402

EXAMPLES_PER_OPERATION = 40


@pytest.fixture
def api_schema(rig: RigFactory) -> Iterator[Any]:
    with rig(limits={"max_body_bytes": 100_000}) as r:
        yield schemathesis.openapi.from_url(r.url + "/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_no_server_errors(case: Any) -> None:
    case.call_and_validate(checks=[not_a_server_error], timeout=60)
