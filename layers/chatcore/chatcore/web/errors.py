"""One JSON error shape for every 4xx/5xx the HTTP apps return:

{"error": {"code": "validation_error", "message": "...", "details": [{"loc": [...], "msg": "..."}]}}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from chatcore.errors import ChatError, Unauthorized
from chatcore.observability import logger

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
}


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    details: list[dict[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    if details:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status, headers=headers)


async def chat_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ChatError)
    headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'} if isinstance(exc, Unauthorized) else None
    if exc.status >= 500:
        logger.error("request failed", error_code=exc.code, error=exc.message)
    return error_response(exc.status, exc.code, exc.message, details=exc.details, headers=headers)


async def http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = {404: "no such route", 405: "method not allowed"}.get(exc.status_code, str(exc.detail))
    return error_response(exc.status_code, code, message, headers=exc.headers)


async def unexpected_error_handler(request: Request, exc: Exception) -> Response:
    logger.exception("unhandled error")
    return error_response(500, "internal_error", "internal error")


EXCEPTION_HANDLERS: dict[Any, Any] = {
    ChatError: chat_error_handler,
    HTTPException: http_error_handler,
    Exception: unexpected_error_handler,
}
