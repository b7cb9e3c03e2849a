"""The OpenAPI 3.1 document of the sessions API, generated from the wire models in ``schemas.py``."""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from chatcore.models import SESSION_ID_PATTERN
from chatcore.web.schemas import (
    CreateSessionIn,
    DeleteSessionsIn,
    DeleteSessionsOut,
    ErrorOut,
    FeedbackIn,
    FeedbackOut,
    MessageListOut,
    SessionListOut,
    SessionOut,
    SwitchBranchIn,
    UpdateSessionIn,
    UserContextIn,
    UserContextOut,
    VersionsOut,
)

_REF = "#/components/schemas/{model}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(model=name)}


def _json(name: str) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": _ref(name)}}}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(status): {"description": "error", **_json("ErrorOut")} for status in statuses}


_SESSION_ID = {
    "name": "session_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": SESSION_ID_PATTERN},
}
_ANSWER_ID = {
    "name": "message_id",
    "in": "path",
    "required": True,
    "description": "the answer's turn id: the messageId of its stream's start chunk, the turn_id of its messages",
    "schema": {"type": "string", "pattern": SESSION_ID_PATTERN},
}


_MESSAGE_ID = {
    "name": "message_id",
    "in": "path",
    "required": True,
    "description": "a message id, an answer's id (its turn id, as useChat holds it) or a user message's client id",
    "schema": {"type": "string", "pattern": r"^[\w.:#-]{1,128}$"},
}


def _query(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema}


@cache  # the served document is a pure function of the code: built once, not state
def sessions_openapi() -> dict[str, Any]:
    models: list[type[BaseModel]] = [
        CreateSessionIn,
        UpdateSessionIn,
        DeleteSessionsIn,
        SessionOut,
        SessionListOut,
        MessageListOut,
        DeleteSessionsOut,
        VersionsOut,
        SwitchBranchIn,
        FeedbackIn,
        FeedbackOut,
        UserContextIn,
        UserContextOut,
        ErrorOut,
    ]
    _, defs = models_json_schema([(m, "validation") for m in models], ref_template=_REF)
    cursor = {"type": "string", "maxLength": 512}
    auth_errors = (400, 401, 405)
    paths: dict[str, Any] = {
        "/health": {"get": {"summary": "Liveness", "security": [], "responses": {"200": {"description": "ok"}}}},
        "/sessions": {
            "post": {
                "summary": "Create a session",
                "requestBody": {"required": False, **_json("CreateSessionIn")},
                "responses": {
                    "201": {"description": "created", **_json("SessionOut")},
                    **_errors(*auth_errors, 413, 415, 422),
                },
            },
            "get": {
                "summary": "List the caller's sessions, newest first",
                "parameters": [
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}),
                    _query("cursor", cursor),
                    _query("status", {"enum": ["active", "archived"]}),
                    _query("chat_type", {"type": "string"}),
                ],
                "responses": {
                    "200": {"description": "a page", **_json("SessionListOut")},
                    **_errors(*auth_errors),
                },
            },
        },
        "/sessions/batch-delete": {
            "post": {
                "summary": "Delete several sessions",
                "requestBody": {"required": True, **_json("DeleteSessionsIn")},
                "responses": {
                    "200": {"description": "result", **_json("DeleteSessionsOut")},
                    **_errors(*auth_errors, 413, 415, 422),
                },
            }
        },
        "/sessions/{session_id}": {
            "parameters": [_SESSION_ID],
            "get": {
                "summary": "Read a session",
                "responses": {
                    "200": {"description": "the session", **_json("SessionOut")},
                    **_errors(*auth_errors, 404),
                },
            },
            "patch": {
                "summary": "Rename, retype, archive or re-tag a session",
                "requestBody": {"required": True, **_json("UpdateSessionIn")},
                "responses": {
                    "200": {"description": "updated", **_json("SessionOut")},
                    **_errors(*auth_errors, 404, 413, 415, 422),
                },
            },
            "delete": {
                "summary": "Delete a session and all its messages",
                "responses": {"204": {"description": "deleted"}, **_errors(*auth_errors, 404)},
            },
        },
        "/sessions/{session_id}/messages": {
            "parameters": [_SESSION_ID],
            "get": {
                "summary": "Messages of the active branch, oldest first (branch=all: every message by seq)",
                "parameters": [
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}),
                    _query("cursor", cursor),
                    _query("branch", {"enum": ["active", "all"], "default": "active"}),
                ],
                "responses": {
                    "200": {"description": "a page", **_json("MessageListOut")},
                    **_errors(*auth_errors, 404),
                },
            },
        },
        "/sessions/{session_id}/messages/{message_id}/versions": {
            "parameters": [_SESSION_ID, _MESSAGE_ID],
            "get": {
                "summary": "The versions of a message (regenerated answers, edited messages), oldest first",
                "responses": {
                    "200": {"description": "the versions", **_json("VersionsOut")},
                    **_errors(*auth_errors, 404),
                },
            },
        },
        "/sessions/{session_id}/branch": {
            "parameters": [_SESSION_ID],
            "put": {
                "summary": "Make a version active: the newest branch under it becomes the conversation",
                "requestBody": {"required": True, **_json("SwitchBranchIn")},
                "responses": {
                    "200": {"description": "switched", **_json("SessionOut")},
                    **_errors(*auth_errors, 404, 409, 413, 415, 422),
                },
            },
        },
        "/sessions/{session_id}/messages/{message_id}/feedback": {
            "parameters": [_SESSION_ID, _ANSWER_ID],
            "put": {
                "summary": "Rate an answer (replaces the caller's earlier rating of it)",
                "requestBody": {"required": True, **_json("FeedbackIn")},
                "responses": {
                    "200": {"description": "stored", **_json("FeedbackOut")},
                    **_errors(*auth_errors, 404, 413, 415, 422),
                },
            },
            "delete": {
                "summary": "Remove the caller's rating of an answer",
                "responses": {"204": {"description": "removed"}, **_errors(*auth_errors, 404)},
            },
        },
        "/users/me/context": {
            "get": {
                "summary": "What the assistant knows about the caller (empty, version 0, when nothing is stored)",
                "responses": {
                    "200": {"description": "the context", **_json("UserContextOut")},
                    **_errors(*auth_errors),
                },
            },
            "put": {
                "summary": 'Replace the caller\'s context ("" clears it); a stale version is 409',
                "requestBody": {"required": True, **_json("UserContextIn")},
                "responses": {
                    "200": {"description": "stored", **_json("UserContextOut")},
                    **_errors(*auth_errors, 409, 413, 415, 422),
                },
            },
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Chat sessions API", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": defs["$defs"],
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
        "security": [{"bearer": []}],
    }
