import hashlib

import pytest

from router.auth import Authenticator
from router.errors import AuthenticationFailed, PermissionDenied, RateLimited
from router.settings import ApiKey, AuthSettings


def key(secret: str, **kw: object) -> ApiKey:
    return ApiKey(name=secret, sha256=hashlib.sha256(secret.encode()).hexdigest(), **kw)  # type: ignore[arg-type]


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def test_off_by_default() -> None:
    assert Authenticator(AuthSettings()).check(None) is None


def test_missing_wrong_and_right_keys() -> None:
    auth = Authenticator(AuthSettings(enabled=True, keys=[key("sk-a")]))
    for header in (None, "sk-a", "Bearer", "Bearer sk-b", "Basic sk-a"):
        with pytest.raises(AuthenticationFailed):
            auth.check(header)
    assert auth.check("Bearer sk-a") is not None


def test_admin_endpoints_need_an_admin_key() -> None:
    auth = Authenticator(AuthSettings(enabled=True, keys=[key("sk-a"), key("sk-root", admin=True)]))
    with pytest.raises(PermissionDenied):
        auth.check("Bearer sk-a", admin=True)
    assert auth.check("Bearer sk-root", admin=True) is not None


def test_requests_per_minute_with_retry_after() -> None:
    clock = Clock()
    auth = Authenticator(AuthSettings(enabled=True, keys=[key("sk-a", requests_per_minute=2)]), clock=clock)
    auth.check("Bearer sk-a")
    clock.now += 20
    auth.check("Bearer sk-a")
    with pytest.raises(RateLimited) as info:
        auth.check("Bearer sk-a")
    assert info.value.headers["retry-after"] == "40"
    clock.now += 41
    auth.check("Bearer sk-a")


def test_tokens_per_minute() -> None:
    clock = Clock()
    auth = Authenticator(AuthSettings(enabled=True, keys=[key("sk-a", tokens_per_minute=100)]), clock=clock)
    api_key = auth.check("Bearer sk-a")
    auth.spend_tokens(api_key, 150)
    with pytest.raises(RateLimited):
        auth.check("Bearer sk-a")
    clock.now += 60
    assert auth.check("Bearer sk-a") is not None
