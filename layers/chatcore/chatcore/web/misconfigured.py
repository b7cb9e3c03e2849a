"""What an HTTP function serves when its configuration is unusable: every route answers a JSON 503 naming the
setting (logged once, when the app is built), and ``/ready`` answers 200 so the Lambda Web Adapter's readiness check
completes instead of polling a process that will never become ready."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from chatcore.errors import ConfigError
from chatcore.observability import logger
from chatcore.web.api import json_api
from chatcore.web.errors import error_response

READY_PATH = "/ready"


async def ready(request: Request) -> Response:
    """Readiness: the process serves requests (``/health`` says whether they can succeed)."""
    return JSONResponse({"status": "ready"})


def misconfigured_app(error: ConfigError) -> Any:
    async def refuse(request: Request) -> Response:
        return error_response(error.status, error.code, error.message)

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    return json_api(
        [
            Route(READY_PATH, ready, methods=["GET"]),
            Route("/{path:path}", refuse, methods=methods),
        ]
    )


def build_or_refuse(factory: Callable[[], Any]) -> Any:
    """``factory()``, or the misconfigured app when it raises ``ConfigError``."""
    try:
        return factory()
    except ConfigError as exc:
        logger.error("configuration error: every request answers 503", error=exc.message)
        return misconfigured_app(exc)
