"""Keys, admin rights, rate limits and request limits over real HTTP: every refusal in OpenAI's shape."""

from __future__ import annotations

import hashlib

import httpx

from tests.reliability.rig import MATH, RigFactory

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
