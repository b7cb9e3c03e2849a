"""JWTs for tests."""

from __future__ import annotations

import time
from typing import Any

import jwt

SECRET = "test-secret-that-is-long-enough-for-hs256"


def make_token(user_id: str, *, secret: str = SECRET, ttl: int = 3600, **claims: Any) -> str:
    now = int(time.time())
    payload: dict[str, Any] = {"sub": user_id, "iat": now, "exp": now + ttl, **claims}
    return jwt.encode(payload, secret, algorithm="HS256")


def auth_header(user_id: str, **kwargs: Any) -> dict[str, str]:
    return {"authorization": f"Bearer {make_token(user_id, **kwargs)}"}
