import hashlib

import pytest

from router.auth import Authenticator
from router.errors import AuthenticationFailed, PermissionDenied
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
