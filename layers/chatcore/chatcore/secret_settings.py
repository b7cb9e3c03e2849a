"""Secrets named by ``*_SECRET_ARN`` settings, read from Secrets Manager once, when the settings are built.

A secret that cannot be read is a ``ConfigError`` naming the setting: the function answers 503 saying so instead of
failing each request differently.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from chatcore.config import Settings
from chatcore.errors import ConfigError, ServiceUnavailable

_ENV_NAMES = {
    "jwt_secret": "JWT_SECRET_ARN",
    "callback_secret": "CALLBACK_SECRET_ARN",
    "redis_url": "REDIS_URL_SECRET_ARN",
    "llm_api_key": "LLM_API_KEY_SECRET_ARN",
}


def with_secrets(
    settings: Settings, *, read: Callable[[str], str], meanwhile: Callable[[], object] | None = None
) -> Settings:
    """``settings`` with the value of each configured secret, read with ``read(arn)``; several are read at once
    (a cold start waits for one round trip, not one per secret). ``meanwhile`` runs in this thread while the reads
    are on their way (then they always run in threads): work the cold start needs next, done during the wait. It
    runs beside ``read``, so the two must not share what is unsafe across threads (``Container.settings``: ``read``
    uses a client built before, ``meanwhile`` builds another one)."""
    wanted = settings.secret_arns()

    def fetch(name: str) -> str:
        try:
            value = read(wanted[name]).strip()
        except ServiceUnavailable as exc:
            raise ConfigError(f"{_ENV_NAMES[name]}: the secret could not be read ({exc.message})") from exc
        if not value:
            raise ConfigError(f"{_ENV_NAMES[name]}: the secret is empty")
        return value

    if not wanted:
        if meanwhile is not None:
            meanwhile()
        return settings
    if len(wanted) > 1 or meanwhile is not None:
        with ThreadPoolExecutor(max_workers=len(wanted)) as pool:
            # Each read in a copy of this context: the function the code runs as (chatcore.aws.running_as) goes along.
            reads = {name: pool.submit(contextvars.copy_context().run, fetch, name) for name in wanted}
            if meanwhile is not None:
                meanwhile()
            values = {name: read.result() for name, read in reads.items()}
    else:
        values = {name: fetch(name) for name in wanted}
    return replace(
        settings,
        jwt_secret=values.get("jwt_secret", settings.jwt_secret),
        callback_secret=values.get("callback_secret", settings.callback_secret),
        redis_url=values.get("redis_url", settings.redis_url),
        llm_api_key=values.get("llm_api_key", settings.llm_api_key),
    )
