"""Keys, admin rights, rate limits and request limits over real HTTP: every refusal in OpenAI's shape."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import httpx

from tests.reliability.rig import MATH, RigFactory, wait_for

CLIENT_KEY, ADMIN_KEY, LIMITED_KEY = "sk-client-test", "sk-admin-test", "sk-limited-test"


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


AUTH = {"enabled": True, "keys": [
    {"name": "client", "sha256": sha(CLIENT_KEY)},
    {"name": "admin", "sha256": sha(ADMIN_KEY), "admin": True},
    {"name": "limited", "sha256": sha(LIMITED_KEY), "requests_per_minute": 2},
]}


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def chat(url: str, headers: dict[str, str], **extra: object) -> httpx.Response:
    body = {"model": "triage", "messages": [{"role": "user", "content": MATH}], "max_tokens": 4, **extra}
    return httpx.post(url + "/v1/chat/completions", json=body, headers=headers, timeout=60)


def error_of(response: httpx.Response) -> dict[str, object]:
    error: dict[str, object] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def test_keys_admin_and_rate_limits(rig: RigFactory) -> None:
    with rig(auth=AUTH) as r:
        for headers in ({}, bearer("sk-wrong"), {"authorization": CLIENT_KEY}, {"authorization": "Basic abc"}):
            response = chat(r.url, headers)
            assert response.status_code == 401
            assert error_of(response)["code"] == "invalid_api_key"
        assert chat(r.url, bearer(CLIENT_KEY)).status_code == 200
        assert httpx.get(r.url + "/v1/models", timeout=10).status_code == 401
        assert httpx.get(r.url + "/health", timeout=10).status_code == 200  # liveness needs no key

        refused = httpx.post(r.url + "/admin/reload", headers=bearer(CLIENT_KEY), timeout=60)
        assert refused.status_code == 403 and error_of(refused)["code"] == "permission_denied"
        assert httpx.post(r.url + "/admin/reload", timeout=60).status_code == 401
        assert httpx.post(r.url + "/admin/reload", headers=bearer(ADMIN_KEY), timeout=60).status_code == 200

        assert [chat(r.url, bearer(LIMITED_KEY)).status_code for _ in range(2)] == [200, 200]
        limited = chat(r.url, bearer(LIMITED_KEY))
        assert limited.status_code == 429
        assert error_of(limited)["code"] == "rate_limit_exceeded"
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        streamed = chat(r.url, bearer(LIMITED_KEY), stream=True)  # refused before any byte of a stream
        assert streamed.status_code == 429 and streamed.headers["content-type"].startswith("application/json")
        assert chat(r.url, bearer(CLIENT_KEY)).status_code == 200  # one key's limit is not another's


def test_request_limits_refuse_before_any_backend_is_called(rig: RigFactory) -> None:
    with rig(limits={"max_body_bytes": 20_000, "max_messages": 4, "max_prompt_chars": 5_000}) as r:
        too_big = httpx.post(r.url + "/v1/chat/completions", timeout=60, json={
            "model": "triage", "messages": [{"role": "user", "content": "x" * 30_000}]})
        assert too_big.status_code == 413 and error_of(too_big)["code"] == "payload_too_large"
        many = httpx.post(r.url + "/v1/chat/completions", timeout=60, json={
            "model": "triage", "messages": [{"role": "user", "content": "hi"}] * 5})
        assert many.status_code == 400 and error_of(many)["param"] == "messages"
        long = httpx.post(r.url + "/v1/completions", timeout=60, json={"model": "triage", "prompt": "z " * 3_000})
        assert long.status_code == 400 and error_of(long)["param"] == "prompt"
        assert all(fake.stats()["completions"] == 0 for fake in r.fakes.values())
        assert chat(r.url, {}).status_code == 200  # and it keeps serving


def test_a_chunked_body_over_the_limit_is_a_413(rig: RigFactory) -> None:
    with rig(limits={"max_body_bytes": 20_000}) as r:
        # No content-length: the limit can only be enforced while the body is read.
        chunked = httpx.post(r.url + "/v1/chat/completions", timeout=60, headers={"content-type": "application/json"},
                             content=iter([b'{"model": "triage", "messages": [{"role": "user", "content": "',
                                           b"y" * 30_000, b'"}]}']))
        assert chunked.status_code == 413
        assert error_of(chunked)["code"] == "payload_too_large"


TOKEN_KEY, OTHER_KEY = "sk-tokens-test", "sk-other-test"
TOKEN_AUTH = {"enabled": True, "keys": [
    {"name": "tokens", "sha256": sha(TOKEN_KEY), "tokens_per_minute": 100},
    {"name": "other", "sha256": sha(OTHER_KEY)},
    {"name": "admin", "sha256": sha(ADMIN_KEY), "admin": True},
]}


def decision_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_token_limit_holds_under_50_concurrent_requests(rig: RigFactory) -> None:
    with rig(auth=TOKEN_AUTH) as r:
        async def burst() -> list[httpx.Response]:
            body = {"model": "triage", "messages": [{"role": "user", "content": MATH}], "max_tokens": 8}
            async with httpx.AsyncClient(timeout=60, headers=bearer(TOKEN_KEY)) as client:
                return list(await asyncio.gather(*(client.post(r.url + "/v1/chat/completions", json=body)
                                                   for _ in range(50))))

        responses = asyncio.run(burst())
        answered = [x for x in responses if x.status_code == 200]
        refused = [x for x in responses if x.status_code == 429]
        assert len(answered) + len(refused) == 50 and answered
        assert all(error_of(x)["code"] == "rate_limit_exceeded" and x.headers["retry-after"] for x in refused)
        spent = sum(x.json()["usage"]["total_tokens"] for x in answered)
        assert spent <= 100, f"{len(answered)} answers spent {spent} tokens of a 100 tokens/min key"


def test_absurd_max_tokens_and_best_of_are_refused_before_any_backend(rig: RigFactory) -> None:
    with rig(auth=TOKEN_AUTH, limits={"max_tokens_cap": 4096, "max_choices": 4}) as r:
        cases = [
            ("/v1/chat/completions", {"messages": [{"role": "user", "content": MATH}], "max_tokens": 2**70},
             OTHER_KEY, "max_tokens"),
            ("/v1/chat/completions", {"messages": [{"role": "user", "content": MATH}], "max_tokens": 5000},
             OTHER_KEY, "max_tokens"),
            ("/v1/completions", {"prompt": MATH, "best_of": 10_000, "max_tokens": 4}, OTHER_KEY, "best_of"),
            ("/v1/chat/completions", {"messages": [{"role": "user", "content": MATH}], "n": 5}, OTHER_KEY, "n"),
            # over the key's whole budget of 100 tokens per minute: could never be admitted
            ("/v1/chat/completions", {"messages": [{"role": "user", "content": MATH}], "max_tokens": 200},
             TOKEN_KEY, "max_tokens"),
        ]
        for path, body, secret, param in cases:
            response = httpx.post(r.url + path, json={"model": "triage", **body}, headers=bearer(secret), timeout=60)
            assert response.status_code == 400, (body, response.text)
            assert error_of(response)["param"] == param
        assert all(fake.stats()["completions"] == 0 for fake in r.fakes.values())


def test_a_dropped_stream_is_charged_what_it_relayed(rig: RigFactory) -> None:
    key = {"name": "streamer", "sha256": sha(TOKEN_KEY), "tokens_per_minute": 150}
    with rig(auth={"enabled": True, "keys": [key]}) as r:
        for fake in r.fakes.values():
            fake.configure(tokens_per_s=20, completion_tokens=40)
        body = {"model": "triage", "messages": [{"role": "user", "content": MATH}], "max_tokens": 40,
                "stream": True}
        seen = 0
        with httpx.stream("POST", r.url + "/v1/chat/completions", json=body, headers=bearer(TOKEN_KEY),
                          timeout=60) as response:
            assert response.status_code == 200
            backend = response.headers["x-triage-backend"]
            for line in response.iter_lines():
                seen += '"content": "tok' in line
                if seen == 4:
                    break  # the client goes away mid-stream, long before the usage chunk
        log = Path(r.settings.decision_log.path or "")
        wait_for(lambda: any(rec.get("outcome") == "cancelled" for rec in decision_records(log)),
                 what="the cancelled stream's decision record")
        record = next(rec for rec in decision_records(log) if rec.get("outcome") == "cancelled")
        assert record["key"] == "streamer" and record["backend"] == backend
        assert seen <= record["completion_tokens"] < 40 and record["prompt_tokens"] > 0 and record["cost_usd"] > 0
        assert r.metric("triage_tokens_total", {"backend": backend, "kind": "completion"}) == record[
            "completion_tokens"]
        assert r.metric("triage_cost_usd_total", {"backend": backend}) > 0
        assert r.metric("triage_requests_total", {"backend": backend, "cluster": str(record["cluster"]),
                                                  "reason": record["reason"], "outcome": "cancelled"}) == 1
        # Charged to the key: what the stream used leaves too little of 150 for another bound of ~115.
        assert chat(r.url, bearer(TOKEN_KEY), max_tokens=40).status_code == 429


def test_feedback_belongs_to_the_key_that_made_the_request(rig: RigFactory) -> None:
    auth = {"enabled": True, "keys": [{"name": "client", "sha256": sha(CLIENT_KEY)},
                                      {"name": "other", "sha256": sha(OTHER_KEY)},
                                      {"name": "admin", "sha256": sha(ADMIN_KEY), "admin": True}]}
    window = 20.0
    with rig(auth=auth, state={"feedback_window_s": window}) as r:
        def feedback(request_id: str, secret: str, score: float = 1.0) -> httpx.Response:
            return httpx.post(r.url + "/v1/feedback", json={"request_id": request_id, "score": score},
                              headers=bearer(secret), timeout=30)

        late = chat(r.url, bearer(CLIENT_KEY)).headers["x-request-id"]
        answered_at = time.monotonic()  # the others are younger: still inside the window when it expires
        answers = [chat(r.url, bearer(CLIENT_KEY)) for _ in range(2)]
        mine, theirs = (a.headers["x-request-id"] for a in answers)
        stolen = feedback(mine, OTHER_KEY)
        assert stolen.status_code == 404 and error_of(stolen)["param"] == "request_id"
        assert feedback(mine, CLIENT_KEY).status_code == 200
        replays = [feedback(mine, CLIENT_KEY, 0.0) for _ in range(20)]
        assert {x.status_code for x in replays} == {400}
        assert feedback(theirs, ADMIN_KEY, 0.0).status_code == 200  # the admin may score any request
        assert feedback(theirs, CLIENT_KEY).status_code == 400  # ... and that was its one feedback
        assert sum(r.metric("triage_feedback_total", {"backend": a.headers["x-triage-backend"]})
                   for a in {a.headers["x-triage-backend"]: a for a in answers}.values()) == 2
        time.sleep(max(0.0, answered_at + window + 0.5 - time.monotonic()))
        expired = feedback(late, CLIENT_KEY)
        assert expired.status_code == 404 and "in the last 20 s" in str(error_of(expired)["message"])

        records = decision_records(Path(r.settings.decision_log.path or ""))
        scored = [rec for rec in records if rec["type"] == "feedback"]
        assert [(rec["request_id"], rec["score"], rec["key"]) for rec in scored] == [
            (mine, 1.0, "client"), (theirs, 0.0, "admin")]
        decisions = [rec for rec in records if rec["type"] == "decision"]
        assert {rec["key"] for rec in decisions} == {"client"}
        assert all(rec["replica"] for rec in records)
        assert all(CLIENT_KEY not in json.dumps(rec) and sha(CLIENT_KEY) not in json.dumps(rec) for rec in records)
