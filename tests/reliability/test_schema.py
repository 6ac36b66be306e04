"""Property-based API fuzzing with schemathesis against the app's own ``/openapi.json``: zero 5xx.

Every generated request, valid (positive) and invalid (negative: wrong types, missing fields, out-of-range
numbers), must be answered without a server error, with auth on (the admin key, so every route is reachable).
Backends are healthy fakes, so a 5xx here is the router's own. Bounded (a fixed number of examples per operation
and mode) and derandomized, so CI runs the same cases every time.

schemathesis' pytest plugin (``from_fixture``) fails on pytest 9 (``'Function' object has no attribute
'_nodeid'``), so the operations' Hypothesis strategies are driven directly with ``@given``.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis  # noqa: E402  (a dev dependency: pyproject.toml)
from hypothesis import HealthCheck, given, settings  # noqa: E402  (comes with schemathesis)
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402

from tests.reliability.rig import RigFactory  # noqa: E402

EXAMPLES_PER_OPERATION = 25
ADMIN_KEY = "sk-schema-admin-0123456789"
AUTH = {"enabled": True, "keys": [{"name": "root", "key": ADMIN_KEY, "admin": True}]}


@pytest.mark.slow
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_no_server_errors(rig: RigFactory, mode: Any) -> None:
    with rig(limits={"max_body_bytes": 100_000}, auth=AUTH, server={"docs": "admin"}) as r:
        headers = {"authorization": f"Bearer {ADMIN_KEY}"}
        schema = schemathesis.openapi.from_url(r.url + "/openapi.json", headers=headers)
        operations = [result.ok() for result in schema.get_all_operations()]
        assert {op.path for op in operations} >= {"/v1/chat/completions", "/v1/completions", "/v1/route"}
        failures: list[str] = []
        for operation in operations:
            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))
            def fuzz(case: Any) -> None:
                case.call_and_validate(checks=[not_a_server_error], timeout=60, headers=headers)

            try:
                fuzz()
            except Unsatisfiable:  # nothing to negate: no body and no constrained parameter (e.g. GET /health)
                assert mode == GenerationMode.NEGATIVE
            except Exception as exc:  # collect every operation's failure, not only the first
                failures.append(f"{operation.method.upper()} {operation.path}: {str(exc)[:1500]}")
        assert not failures, "\n\n".join(failures)
