"""The callback API (CallbackFunction): external services report an async tool's completion.

    POST /operations/{operation_id}/complete   {"output": <any JSON>}            → SendTaskSuccess
    POST /operations/{operation_id}/fail       {"error": "...", "detail"?: "..."} → SendTaskFailure
    POST /operations/{operation_id}/heartbeat  {}                                 → SendTaskHeartbeat
    GET  /operations/openapi.json, GET /health  no signature

Authenticated by an HMAC signature over the method, the path and the body (``chatcore.signing``), not a JWT; a
signature is accepted once (a replayed request is 401). Unknown operations are 404; a second completion is 409 and
has no effect.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from chatcore.config import Settings
from chatcore.errors import BadRequest, ConfigError, PayloadTooLarge, ServiceUnavailable, Unauthorized
from chatcore.operations import Operations
from chatcore.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, TOLERANCE_SECONDS, signature_digest, verify
from chatcore.web.api import json_api
from chatcore.web.inputs import parse_json, parse_model

MAX_CALLBACK_BYTES = 65_536
OPERATION_ID_PATTERN = r"^op_[0-9a-f]{40}$"
_OPERATION_ID = re.compile(OPERATION_ID_PATTERN)


class CompleteIn(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)
    output: JsonValue = None


class FailIn(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)
    error: str = Field(min_length=1, max_length=1000)
    detail: str = Field(default="", max_length=10_000)


class CallbackApi:
    def __init__(self, operations: Operations | None, settings: Settings) -> None:
        self.operations = operations
        self.settings = settings

    async def _verified(self, request: Request) -> tuple[str, Any]:
        operation_id = str(request.path_params["operation_id"])
        if not _OPERATION_ID.fullmatch(operation_id):
            raise BadRequest("invalid operation id")
        if self.operations is None or not self.settings.callback_secret:
            raise ServiceUnavailable("callbacks are not configured")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_CALLBACK_BYTES:
            raise PayloadTooLarge(f"body larger than {MAX_CALLBACK_BYTES} bytes")
        body = await request.body()
        if len(body) > MAX_CALLBACK_BYTES:
            raise PayloadTooLarge(f"body larger than {MAX_CALLBACK_BYTES} bytes")
        timestamp, signature = request.headers.get(TIMESTAMP_HEADER), request.headers.get(SIGNATURE_HEADER)
        secret = self.settings.callback_secret
        if (
            not timestamp
            or not signature
            or not verify(secret, timestamp, signature, request.method, request.url.path, body)
        ):
            raise Unauthorized("missing, invalid or expired signature")
        # Kept past the window (with its clock skew) so a replay is refused for as long as it would verify.
        expires_at = int(timestamp) + 2 * TOLERANCE_SECONDS
        if not await self.operations.claim_signature(signature_digest(signature), expires_at=expires_at):
            raise Unauthorized("this signed request was already used")
        return operation_id, parse_json(body or b"{}")

    async def health(self, request: Request) -> Response:
        if self.operations is None or not self.settings.callback_secret:
            raise ServiceUnavailable("callbacks are not configured")
        return JSONResponse({"status": "ok"})

    async def openapi(self, request: Request) -> Response:
        from chatcore.web.openapi import callback_openapi  # built on first request: no cold-start cost

        return JSONResponse(callback_openapi())

    async def complete(self, request: Request) -> Response:
        operation_id, data = await self._verified(request)
        body = parse_model(CompleteIn, data)
        assert self.operations is not None
        await self.operations.complete(operation_id, output=body.output)
        return JSONResponse({"operation_id": operation_id, "status": "completing"}, status_code=202)

    async def fail(self, request: Request) -> Response:
        operation_id, data = await self._verified(request)
        body = parse_model(FailIn, data)
        assert self.operations is not None
        error = body.error + (f": {body.detail}" if body.detail else "")
        await self.operations.complete(operation_id, error=error)
        return JSONResponse({"operation_id": operation_id, "status": "failing"}, status_code=202)

    async def heartbeat(self, request: Request) -> Response:
        operation_id, _ = await self._verified(request)
        assert self.operations is not None
        await self.operations.heartbeat(operation_id)
        return JSONResponse({"operation_id": operation_id, "status": "waiting"})


def create_callback_app(operations: Operations | None, settings: Settings) -> Starlette:
    api = CallbackApi(operations, settings)
    return json_api(
        [
            Route("/health", api.health, methods=["GET"]),
            Route("/operations/openapi.json", api.openapi, methods=["GET"]),
            Route("/operations/{operation_id}/complete", api.complete, methods=["POST"]),
            Route("/operations/{operation_id}/fail", api.fail, methods=["POST"]),
            Route("/operations/{operation_id}/heartbeat", api.heartbeat, methods=["POST"]),
        ]
    )


def default_callback_app() -> Starlette:
    from chatcore.container import default_container  # operations only: no chat engine, no LLM client here

    container = default_container()
    settings = container.settings
    if not settings.callback_secret:
        raise ConfigError("no callback secret: set CALLBACK_SECRET_ARN (the stack's CallbackSigningSecret)")
    return create_callback_app(container.operations, settings)
