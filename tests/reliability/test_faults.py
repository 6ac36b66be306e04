"""Backend faults seen through the real app over real HTTP: the client gets an answer or a clear error, never a hang.

The backends are ``bench.harness.fake_openai`` processes; each test breaks the backend the router picks first
(asked through ``/v1/route``) and checks what the client sees and what the backend saw.
"""

from __future__ import annotations

import httpx
import pytest

from tests.reliability import sse
from tests.reliability.rig import MATH, RigFactory, wait_for

EXPECTED = "".join(f"tok{i} " for i in range(8))


def send(url: str, stream: bool, timeout: float = 60) -> tuple[httpx.Response, bytes]:
    body = {"model": "triage", "messages": [{"role": "user", "content": MATH}], "max_tokens": 8, "stream": stream}
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=timeout) as response:
        return response, response.read()


def answer_text(response: httpx.Response, raw: bytes, stream: bool) -> str:
    if stream:
        payloads, done = sse.parse(raw)
        assert done
        return sse.text(payloads)
    content: str = response.json()["choices"][0]["message"]["content"]
    return content


def assert_openai_error(raw: bytes, code: str) -> None:
    error = httpx.Response(200, content=raw).json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    assert "127.0.0.1" not in error["message"] and "http" not in error["message"]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("fault", ["500", "429", "malformed", "hang", "killed"])
def test_a_failing_first_choice_falls_back_before_the_first_byte(rig: RigFactory, fault: str, stream: bool) -> None:
    with rig(timeouts={"first_byte": 1.5}) as r:
        first = r.first_choice()
        if fault == "killed":
            r.fakes[first].kill()
        else:
            r.fakes[first].configure(fault=fault)
        response, raw = send(r.url, stream)
        assert response.status_code == 200, raw[:300]
        assert response.headers["x-triage-backend"] != first
        assert response.headers["x-triage-reason"] == "fallback_after_error"
        assert answer_text(response, raw, stream) == EXPECTED
        assert r.metric("triage_fallbacks_total", {"reason": "fallback_after_error"}) == 1
        if fault == "hang":  # the router gave up on the hung call and closed its connection
            wait_for(lambda: r.fakes[first].stats()["disconnects"] == 1, what="the hung backend to see a close")


@pytest.mark.parametrize("stream", [False, True])
def test_every_candidate_failing_is_a_502_in_openai_shape(rig: RigFactory, stream: bool) -> None:
    with rig() as r:
        for fake in r.fakes.values():
            fake.configure(fault="500")
        response, raw = send(r.url, stream)
        assert response.status_code == 502
        assert_openai_error(raw, "backend_error")
        assert httpx.get(r.url + "/health").status_code == 200


def test_a_stream_reset_mid_way_ends_with_an_error_event_then_done(rig: RigFactory) -> None:
    with rig() as r:
        r.fakes[r.first_choice()].configure(fault="reset_mid_stream", fault_after_tokens=3)
        response, raw = send(r.url, stream=True, timeout=30)
        assert response.status_code == 200
        payloads, done = sse.parse(raw)
        assert done
        assert sse.text(payloads) == "tok0 tok1 tok2 "
        assert payloads[-1]["error"]["code"] == "backend_error"


def test_a_torn_sse_event_is_not_forwarded_and_the_stream_ends_cleanly(rig: RigFactory) -> None:
    with rig() as r:
        r.fakes[r.first_choice()].configure(fault="broken_sse", fault_after_tokens=3)
        response, raw = send(r.url, stream=True, timeout=30)
        assert response.status_code == 200
        payloads, done = sse.parse(raw)  # raises if an event is torn
        assert done
        assert sse.text(payloads) == "tok0 tok1 tok2 "
        assert payloads[-1]["error"]["code"] == "backend_error"


def test_a_client_that_goes_away_mid_stream_cancels_the_backend_call(rig: RigFactory) -> None:
    with rig() as r:
        first = r.first_choice()
        r.fakes[first].configure(tokens_per_s=4)  # 16 tokens: a 4 s stream, long enough to walk out of
        body = {"model": "triage", "messages": [{"role": "user", "content": MATH}], "stream": True}
        with httpx.stream("POST", r.url + "/v1/chat/completions", json=body, timeout=30) as response:
            assert response.headers["x-triage-backend"] == first
            for chunk in response.iter_raw():
                if b"tok0" in chunk:
                    break
        # Leaving the block closed our connection mid-stream; the router must close its own to the backend.
        wait_for(lambda: r.fakes[first].stats()["disconnects"] == 1, what="the backend to see the router close")
        stats = r.fakes[first].stats()
        assert stats["streams_completed"] == 0 and stats["active"] == 0
        wait_for(lambda: r.metric("triage_requests_total", {"backend": first, "cluster": response.headers[
            "x-triage-cluster"], "reason": response.headers["x-triage-reason"], "outcome": "cancelled"}) == 1,
            what="the request to be accounted as cancelled")


def test_a_pinned_backend_that_is_down_is_a_502_not_a_hang(rig: RigFactory) -> None:
    with rig(timeouts={"first_byte": 1.5}) as r:
        name = r.artifact.models[0]
        r.fakes[name].configure(fault="hang")
        response = r.chat(model=name)
        assert response.status_code == 502
        assert_openai_error(response.content, "backend_error")
