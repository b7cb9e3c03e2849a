"""Request parsing shared by the HTTP apps: bounded JSON bodies, strict models, query parameters."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from chatcore.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType, ValidationFailed
from chatcore.models import is_valid_session_id

M = TypeVar("M", bound=BaseModel)


def _reject_constant(value: str) -> Any:
    raise ValueError(f"{value} is not valid JSON")


async def read_json(request: Request, *, max_bytes: int, allow_empty: bool = False) -> Any:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"body larger than {max_bytes} bytes")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise PayloadTooLarge(f"body larger than {max_bytes} bytes")
    if not body.strip():
        if allow_empty:
            return {}
        raise BadRequest("request body is required")
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise UnsupportedMediaType("content-type must be application/json")
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise BadRequest("malformed JSON body") from exc


def parse_model[M: BaseModel](model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data, strict=True)
    except ValidationError as exc:
        details = [{"loc": [str(part) for part in error["loc"]], "msg": error["msg"]} for error in exc.errors()]
        raise ValidationFailed("invalid request body", details=details) from exc


def session_id_param(request: Request) -> str:
    session_id = str(request.path_params["session_id"])
    if not is_valid_session_id(session_id):
        raise BadRequest("invalid session id")
    return session_id


def int_query(request: Request, name: str, *, default: int, minimum: int, maximum: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or len(raw) > 6:
        raise BadRequest(f"{name} must be an integer between {minimum} and {maximum}")
    value = int(raw)
    if not minimum <= value <= maximum:
        raise BadRequest(f"{name} must be an integer between {minimum} and {maximum}")
    return value


def known_query(request: Request, allowed: set[str]) -> None:
    unknown = sorted(set(request.query_params.keys()) - allowed)
    if unknown:
        raise BadRequest(f"unknown query parameter(s): {', '.join(unknown)}")
    for key in allowed:
        if len(request.query_params.getlist(key)) > 1:
            raise BadRequest(f"query parameter {key} given more than once")
