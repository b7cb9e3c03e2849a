"""Secrets named by ``*_SECRET_ARN`` settings, read from Secrets Manager once, when the settings are built.

A secret that cannot be read is a ``ConfigError`` naming the setting: the function answers 503 saying so instead of
failing each request differently.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from chatcore.config import Settings
from chatcore.errors import ConfigError, ServiceUnavailable

_ENV_NAMES = {
    "jwt_secret": "JWT_SECRET_ARN",
    "callback_secret": "CALLBACK_SECRET_ARN",
    "redis_url": "REDIS_URL_SECRET_ARN",
    "llm_api_key": "LLM_API_KEY_SECRET_ARN",
}


def with_secrets(settings: Settings, *, read: Callable[[str], str]) -> Settings:
    """``settings`` with the value of each configured secret, read with ``read(arn)``."""
    values: dict[str, str] = {}
    for name, arn in settings.secret_arns().items():
        try:
            value = read(arn).strip()
        except ServiceUnavailable as exc:
            raise ConfigError(f"{_ENV_NAMES[name]}: the secret could not be read ({exc.message})") from exc
        if not value:
            raise ConfigError(f"{_ENV_NAMES[name]}: the secret is empty")
        values[name] = value
    return replace(
        settings,
        jwt_secret=values.get("jwt_secret", settings.jwt_secret),
        callback_secret=values.get("callback_secret", settings.callback_secret),
        redis_url=values.get("redis_url", settings.redis_url),
        llm_api_key=values.get("llm_api_key", settings.llm_api_key),
    )
