"""The OpenAPI 3.1 documents of the HTTP apps, generated from their wire models, with the constraints the apps
enforce (patterns, lengths, formats, ``minProperties``) so that a request valid by the document is accepted and one
invalid by it is refused; the hostile suite (``tests/hostile``) holds each app to its document with schemathesis.

    GET /sessions/openapi.json     the sessions API (``sessions_openapi``)
    GET /chat/openapi.json         the chat API (``chat_openapi``)
    GET /operations/openapi.json   the callback API (``callback_openapi``)

Limits that are settings (``MAX_TITLE_CHARS``, ...) are documented with the values the app runs with. Two formats
are ours: ``session-cursor`` and ``message-cursor``, the opaque ``next_cursor`` of a page (a made-up one is 400).
"""

from __future__ import annotations

import unicodedata
from functools import cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from chatcore.models import CHAT_TYPE_PATTERN, NOT_BLANK_PATTERN, SESSION_ID_PATTERN
from chatcore.web.schemas import (
    MESSAGE_REF_PATTERN,
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
    "schema": {"type": "string", "pattern": MESSAGE_REF_PATTERN},
}


def _query(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    parameter = {"name": name, "in": "query", "required": False, "schema": schema}
    return {**parameter, "description": description} if description else parameter


def _cursor(kind: str) -> dict[str, Any]:
    note = "opaque (at most 512 characters): the next_cursor of the previous page; any other value is 400"
    return _query("cursor", {"type": "string", "format": f"{kind}-cursor"}, note)


def _without(categories: frozenset[str], *, keep: str = "") -> str:
    """A pattern of text with no character of the Unicode ``categories`` (but those in ``keep``), as the apps check
    it with ``unicodedata`` (so the same Unicode version). Built when a document is first served, not at import."""
    ranges: list[tuple[int, int]] = []
    for code in range(0x110000):
        char = chr(code)
        if unicodedata.category(char) in categories and char not in keep:
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1] = (ranges[-1][0], code)
            else:
                ranges.append((code, code))

    def escaped(code: int) -> str:
        return f"\\u{code:04x}" if code <= 0xFFFF else chr(code)

    parts = (escaped(a) if a == b else f"{escaped(a)}-{escaped(b)}" for a, b in ranges)
    return f"^[^{''.join(parts)}]*$"


@cache
def no_control_characters() -> str:
    """A title: no control (Cc) or format (Cf) characters (``sessions_app.clean_title``)."""
    return _without(frozenset({"Cc", "Cf"}))


@cache
def text_characters() -> str:
    """Free text (a context, a comment): no control characters but line breaks and tabs (``inputs.check_text``)."""
    return _without(frozenset({"Cc"}), keep="\n\r\t")


def _link(target: str, /, **parameters: str) -> dict[str, Any]:
    """An OpenAPI link to the operation ``target``, its parameters taken from this request or response."""
    return {"operationId": target, "parameters": parameters}


@cache  # the served document is a pure function of the code and the limits: built once, not state
def sessions_openapi(
    max_title_chars: int = 200, max_metadata_bytes: int = 2048, user_context_max_chars: int = 4000
) -> dict[str, Any]:
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
    schemas = defs["$defs"]
    title = {"type": "string", "maxLength": max_title_chars, "pattern": no_control_characters()}
    metadata_note = f"a JSON object of at most {max_metadata_bytes} bytes as compact JSON"
    for model in ("CreateSessionIn", "UpdateSessionIn"):
        properties = schemas[model]["properties"]
        properties["title"] = {**properties["title"], **title, "description": "stored stripped"}
        properties["metadata"] = {**properties["metadata"], "description": metadata_note}
    for prop in schemas["UpdateSessionIn"]["properties"].values():
        prop.pop("default", None)  # absent means unchanged; a null is refused
    context = schemas["UserContextIn"]["properties"]["context"]
    context.update(
        maxLength=user_context_max_chars, pattern=text_characters(), description='stored stripped; "" clears'
    )
    comment = schemas["FeedbackIn"]["properties"]["comment"]
    comment["anyOf"] = [
        {**branch, "pattern": text_characters()} if branch.get("type") == "string" else branch
        for branch in comment["anyOf"]
    ]
    auth_errors = (400, 401, 405)
    created = {
        "getSession": _link("getSession", session_id="$response.body#/id"),
        "updateSession": _link("updateSession", session_id="$response.body#/id"),
        "deleteSession": _link("deleteSession", session_id="$response.body#/id"),
        "listMessages": _link("listMessages", session_id="$response.body#/id"),
    }
    paths: dict[str, Any] = {
        "/health": {"get": {"summary": "Liveness", "security": [], "responses": {"200": {"description": "ok"}}}},
        "/sessions": {
            "post": {
                "operationId": "createSession",
                "summary": "Create a session",
                "requestBody": {"required": False, **_json("CreateSessionIn")},
                "responses": {
                    "201": {"description": "created", **_json("SessionOut"), "links": created},
                    **_errors(*auth_errors, 413, 415, 422),
                },
            },
            "get": {
                "operationId": "listSessions",
                "summary": "List the caller's sessions, newest first",
                "parameters": [
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}),
                    _cursor("session"),
                    _query("status", {"type": "string", "enum": ["active", "archived"]}),
                    _query("chat_type", {"type": "string", "pattern": CHAT_TYPE_PATTERN}),
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
                "operationId": "getSession",
                "summary": "Read a session",
                "responses": {
                    "200": {"description": "the session", **_json("SessionOut")},
                    **_errors(*auth_errors, 404),
                },
            },
            "patch": {
                "operationId": "updateSession",
                "summary": "Rename, retype, archive or re-tag a session",
                "requestBody": {"required": True, **_json("UpdateSessionIn")},
                "responses": {
                    "200": {"description": "updated", **_json("SessionOut")},
                    **_errors(*auth_errors, 404, 413, 415, 422),
                },
            },
            "delete": {
                "operationId": "deleteSession",
                "summary": "Delete a session and all its messages",
                "responses": {"204": {"description": "deleted"}, **_errors(*auth_errors, 404)},
            },
        },
        "/sessions/{session_id}/messages": {
            "parameters": [_SESSION_ID],
            "get": {
                "operationId": "listMessages",
                "summary": "Messages of the active branch, oldest first (branch=all: every message by seq)",
                "parameters": [
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}),
                    _cursor("message"),
                    _query("branch", {"type": "string", "enum": ["active", "all"], "default": "active"}),
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
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
        "security": [{"bearer": []}],
    }


_SSE = {"content": {"text/event-stream": {"schema": {"type": "string"}}}}


def _stream_responses(session_id: str, errors: tuple[int, ...]) -> dict[str, Any]:
    """A turn's responses: its stream (linked to resuming and stopping it, the session id found at ``session_id``)
    and its errors."""
    return {
        "200": {
            "description": "the stream",
            **_SSE,
            "links": {
                "resume": _link("resume", session_id=session_id),
                "stop": _link("stop", session_id=session_id),
            },
        },
        **_errors(*errors),
    }


_PROTOCOL = {
    "name": "x-ui-stream-protocol",
    "in": "header",
    "required": False,
    "description": "the stream's protocol level (default: the deployment's UI_STREAM_PROTOCOL)",
    "schema": {"type": "string", "enum": ["v5", "v6", "v7"]},
}
_CLIENT_ID_PATTERN = r"^[\w.:-]{1,128}$"


@cache
def chat_openapi(max_message_chars: int = 32_000, allow_anonymous: bool = False) -> dict[str, Any]:
    from chatcore.web.chat_app import ApprovalIn, ChatRequest, SimpleMessageIn  # the app serves this document

    _, defs = models_json_schema(
        [(m, "validation") for m in (ChatRequest, ApprovalIn, SimpleMessageIn, ErrorOut)], ref_template=_REF
    )
    schemas = defs["$defs"]
    request = schemas["ChatRequest"]
    request["description"] = (
        "The AI SDK transport body. Only the last message is read, and it must be (422 otherwise, which JSON Schema "
        "cannot say of a last item) a user message whose text parts hold 1 to MAX_MESSAGE_CHARS characters that are "
        "not all blank, its id empty or like messageId (a new message, a resend or an edit), or an assistant message "
        "whose tool parts answer approvals; trigger regenerate-message answers again (messageId: the answer, default "
        "the last)."
    )
    request["properties"]["id"] = {"type": "string", "pattern": SESSION_ID_PATTERN, "description": "the session id"}
    message_id = request["properties"]["messageId"]
    message_id["anyOf"] = [
        {**branch, "pattern": _CLIENT_ID_PATTERN} if branch.get("type") == "string" else branch
        for branch in message_id["anyOf"]
    ]
    schemas["SimpleMessageIn"]["properties"]["message"].update(
        maxLength=max_message_chars, pattern=NOT_BLANK_PATTERN, description="not blank"
    )
    session_id = {**_SESSION_ID, "description": "the session id"}
    approval_id = {
        "name": "approval_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": _CLIENT_ID_PATTERN},
    }
    after = {
        "name": "last-event-id",
        "in": "header",
        "required": False,
        "description": "continue after this replay-log entry",
        "schema": {"type": "string", "format": "replay-entry-id", "pattern": r"^\d{1,20}-\d{1,20}$"},
    }
    stream_errors = (400, 401, 404, 405, 409, 413, 415, 422)
    stop_out = {
        "type": "object",
        "required": ["status", "turn_id"],
        "properties": {"status": {"const": "stopping"}, "turn_id": {"type": "string"}},
    }
    paths: dict[str, Any] = {
        "/health": {"get": {"summary": "Liveness", "security": [], "responses": {"200": {"description": "ok"}}}},
        "/ready": {
            "get": {
                "summary": "Readiness (200 also when misconfigured)",
                "security": [],
                "responses": {"200": {"description": "ok"}},
            }
        },
        "/chat": {
            "post": {
                "operationId": "chat",
                "summary": "Send, resend, edit or regenerate; or answer approvals: the answer's UI message stream",
                "parameters": [_PROTOCOL],
                "requestBody": {"required": True, **_json("ChatRequest")},
                "responses": _stream_responses("$request.body#/id", stream_errors),
            }
        },
        "/sessions/{session_id}/stream": {
            "parameters": [session_id],
            "post": {
                "operationId": "streamMessage",
                "summary": "Send a message (for curl): the answer's stream",
                "parameters": [_PROTOCOL],
                "requestBody": {"required": True, **_json("SimpleMessageIn")},
                "responses": _stream_responses("$request.path.session_id", stream_errors),
            },
        },
        "/chat/{session_id}/stream": {
            "parameters": [session_id],
            "get": {
                "operationId": "resume",
                "summary": "The active turn replayed from its start (or after Last-Event-ID), then live",
                "parameters": [_PROTOCOL, after],
                "responses": {
                    "200": {"description": "the stream", **_SSE},
                    "204": {"description": "nothing is active (x-resume-unavailable says why, when it is known)"},
                    **_errors(400, 401, 404, 405),
                },
            },
        },
        "/chat/{session_id}/stop": {
            "parameters": [session_id],
            "post": {
                "operationId": "stop",
                "summary": "Stop the active turn (its partial answer is kept)",
                "responses": {
                    "202": {"description": "stopping", "content": {"application/json": {"schema": stop_out}}},
                    "204": {"description": "nothing runs"},
                    **_errors(400, 401, 404, 405),
                },
            },
        },
        "/chat/{session_id}/approvals/{approval_id}": {
            "parameters": [session_id, approval_id],
            "post": {
                "operationId": "answerApproval",
                "summary": "Answer a tool approval: the stream of the message that asked, continued",
                "parameters": [_PROTOCOL],
                "requestBody": {"required": True, **_json("ApprovalIn")},
                "responses": {"200": {"description": "the stream", **_SSE}, **_errors(*stream_errors)},
            },
        },
    }
    security: list[dict[str, list[str]]] = [{"bearer": []}, {}] if allow_anonymous else [{"bearer": []}]
    return {
        "openapi": "3.1.0",
        "info": {"title": "Chat API", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
        "security": security,
    }


@cache
def callback_openapi() -> dict[str, Any]:
    from chatcore.web.callback_app import MAX_CALLBACK_BYTES, OPERATION_ID_PATTERN, CompleteIn, FailIn

    _, defs = models_json_schema([(m, "validation") for m in (CompleteIn, FailIn, ErrorOut)], ref_template=_REF)
    operation_id = {
        "name": "operation_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": OPERATION_ID_PATTERN},
    }
    accepted = {
        "type": "object",
        "required": ["operation_id", "status"],
        "properties": {"operation_id": {"type": "string"}, "status": {"type": "string"}},
    }
    errors = _errors(400, 401, 404, 405, 409, 413, 422)

    def action(name: str, summary: str, status: str, body: dict[str, Any], **links: Any) -> dict[str, Any]:
        answer = {"description": "accepted", "content": {"application/json": {"schema": accepted}}}
        return {
            "parameters": [operation_id],
            "post": {
                "operationId": name,
                "summary": summary,
                "requestBody": body,
                "responses": {status: {**answer, "links": links} if links else answer, **errors},
            },
        }

    same_operation = "$request.path.operation_id"

    paths = {
        "/health": {
            "get": {
                "summary": "Liveness (503 when no signing secret is configured)",
                "security": [],
                "responses": {"200": {"description": "ok"}, **_errors(503)},
            }
        },
        "/operations/{operation_id}/complete": action(
            "complete",
            "Report an operation's result → SendTaskSuccess",
            "202",
            {"required": False, **_json("CompleteIn")},
        ),
        "/operations/{operation_id}/fail": action(
            "fail", "Report an operation's failure → SendTaskFailure", "202", {"required": True, **_json("FailIn")}
        ),
        "/operations/{operation_id}/heartbeat": action(
            "heartbeat",
            "Tell the waiting operation it is alive → SendTaskHeartbeat",
            "200",
            {"required": False, "content": {"application/json": {"schema": {"type": "object"}}}},
            # A job that beats then reports on the same operation.
            complete=_link("complete", operation_id=same_operation),
            fail=_link("fail", operation_id=same_operation),
        ),
    }
    signed = (
        f"HMAC-SHA256 over '<timestamp>.<METHOD>.<path>.<body>' (body at most {MAX_CALLBACK_BYTES} bytes) with the "
        "callback secret: 'sha256=<hex>'; each signature is accepted once, within five minutes of its timestamp"
    )
    return {
        "openapi": "3.1.0",
        "info": {"title": "Callback API", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": defs["$defs"],
            "securitySchemes": {
                "signature": {"type": "apiKey", "in": "header", "name": "x-chat-signature", "description": signed},
                "timestamp": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "x-chat-timestamp",
                    "description": "unix seconds",
                },
            },
        },
        "security": [{"signature": [], "timestamp": []}],
    }
