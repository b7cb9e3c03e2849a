"""Request parsing shared by the HTTP apps: bounded JSON bodies, strict models, query parameters."""

from __future__ import annotations

import json
import unicodedata
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from chatcore.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType, ValidationFailed
from chatcore.models import is_valid_session_id

M = TypeVar("M", bound=BaseModel)


def _reject_constant(value: str) -> Any:
    raise ValueError(f"{value} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):  # 1e400 parses as inf: no JSON number, no DynamoDB number
        message = f"the number {text[:40]} is out of range"
        raise ValidationFailed(message, details=[{"loc": ["body"], "msg": message}])
    return value


def _surrogate_path(value: Any, path: list[str]) -> list[str] | None:
    """Where a lone UTF-16 surrogate ("\\ud800") hides in a parsed body: it has no UTF-8 form."""
    if isinstance(value, str):
        return None if value.isascii() or _encodes(value) else path
    if isinstance(value, dict):
        for key, item in value.items():
            if not _encodes(key):
                return [*path, "<key>"]
            found = _surrogate_path(item, [*path, key])
            if found is not None:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _surrogate_path(item, [*path, str(index)])
            if found is not None:
                return found
    return None


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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
    return parse_json(body)


def parse_json(body: bytes) -> Any:
    """A JSON body as strictly as it is stored: no NaN or infinities, no nesting deeper than the parser goes, no
    lone surrogates (400 or 422, never an error later on the way to DynamoDB or Step Functions)."""
    try:
        data = json.loads(body, parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as exc:
        raise BadRequest("malformed JSON body") from exc
    where = _surrogate_path(data, [])
    if where is not None:
        message = "text with a lone surrogate code point (not valid Unicode)"
        raise ValidationFailed(message, details=[{"loc": where or ["body"], "msg": message}])
    return data


_LINE_BREAKS = frozenset("\n\r\t")


def check_text(text: str, *, loc: list[str], max_chars: int) -> str:
    """Free text of several lines (a user's context, a comment): at most ``max_chars`` characters and no control
    characters but line breaks and tabs, as sent (what the OpenAPI document says), then stripped. Lone surrogates
    never get here (``read_json`` refuses them)."""
    if len(text) > max_chars:
        raise ValidationFailed("invalid request body", details=[{"loc": loc, "msg": f"at most {max_chars} characters"}])
    if any(unicodedata.category(char) == "Cc" and char not in _LINE_BREAKS for char in text):
        message = "control characters other than line breaks and tabs are not allowed"
        raise ValidationFailed("invalid request body", details=[{"loc": loc, "msg": message}])
    return text.strip()


def parse_model[M: BaseModel](model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data, strict=True)
    except ValidationError as exc:
        details = [{"loc": [str(part) for part in error["loc"]], "msg": error["msg"]} for error in exc.errors()]
        raise ValidationFailed("invalid request body", details=details) from exc


def session_id_param(request: Request, name: str = "session_id") -> str:
    """An id from the path (a session id, or a message id: the turn id of an answer)."""
    value = str(request.path_params[name])
    if not is_valid_session_id(value):
        raise BadRequest(f"invalid {name.replace('_', ' ')}")
    return value


def int_query(request: Request, name: str, *, default: int, minimum: int, maximum: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 6:  # "²".isdigit() is True; int("²") fails
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
