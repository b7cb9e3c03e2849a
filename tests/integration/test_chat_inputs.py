"""Bad input to the chat routes: a clear JSON 4xx before any stream starts, and nothing written."""

from __future__ import annotations

import json

import boto3
import httpx
import pytest

from chatcore.web.chat_app import LEVEL_HEADER
from tests.conftest import ChatStack, start_chat_stack, stop_chat_stack
from tests.integration.test_chat_turns import ui_body
from tests.support.tokens import make_token

JSON = {"content-type": "application/json"}


def _scan(table: str) -> list[str]:
    return sorted(json.dumps(i, sort_keys=True) for i in boto3.client("dynamodb").scan(TableName=table)["Items"])


def _ui(**changes) -> bytes:
    body = ui_body("chat-input-session-1", "hello") | changes
    return json.dumps(body).encode()


BAD = [
    ("POST", "/chat", {}, _ui(), 401, "unauthorized"),
    ("POST", "/chat", None, b"{not json", 400, "bad_request"),
    ("POST", "/chat", None, b"[]", 422, "validation_error"),
    ("POST", "/chat", None, json.dumps({"messages": []}).encode(), 422, "validation_error"),
    ("POST", "/chat", None, _ui(id="bad id!"), 400, "bad_request"),
    ("POST", "/chat", None, _ui(messages=[]), 422, "validation_error"),
    ("POST", "/chat", None, _ui(messages="hello"), 422, "validation_error"),
    (
        "POST",
        "/chat",
        None,
        _ui(messages=[{"id": "a", "role": "assistant", "parts": [{"type": "text", "text": "x"}]}]),
        422,
        "validation_error",
    ),
    ("POST", "/chat", None, _ui(messages=[{"id": "u1", "role": "user", "parts": []}]), 422, "validation_error"),
    (
        "POST",
        "/chat",
        None,
        _ui(messages=[{"id": "u1", "role": "user", "parts": [{"type": "text", "text": "  "}]}]),
        422,
        "validation_error",
    ),
    (
        "POST",
        "/chat",
        None,
        _ui(messages=[{"id": "u1", "role": "user", "parts": [{"type": "text", "text": "x" * 32_001}]}]),
        422,
        "validation_error",
    ),
    (
        "POST",
        "/chat",
        None,
        _ui(messages=[{"id": "bad id with spaces", "role": "user", "parts": [{"type": "text", "text": "x"}]}]),
        422,
        "validation_error",
    ),
    (
        "POST",
        "/chat",
        None,
        _ui(messages=[{"id": "u1", "role": "robot", "parts": [{"type": "text", "text": "x"}]}]),
        422,
        "validation_error",
    ),
    ("POST", "/chat", None, _ui(trigger="explode"), 422, "validation_error"),
    # A regenerate never creates a session: with nothing stored there is nothing to answer again.
    ("POST", "/chat", None, _ui(trigger="regenerate-message"), 404, "not_found"),
    ("POST", "/chat", None, _ui(trigger="regenerate-message", messageId="bad id!"), 422, "validation_error"),
    ("POST", "/chat", {"content-type": "text/plain"}, _ui(), 415, "unsupported_media_type"),
    ("POST", "/chat", None, b'{"id": "' + b"x" * 3_000_000 + b'"}', 413, "payload_too_large"),
    ("GET", "/chat", None, None, 405, "method_not_allowed"),
    ("POST", "/sessions/{sid}/stream", None, b'{"message": "hi", "extra": 1}', 422, "validation_error"),
    ("POST", "/sessions/{sid}/stream", None, b'{"text": "hi"}', 422, "validation_error"),
    ("POST", "/sessions/{sid}/stream", None, b'{"message": 5}', 422, "validation_error"),
    ("POST", "/sessions/{sid}/stream", None, b'{"message": ""}', 422, "validation_error"),
    # Blank as Python strips it and as the document's pattern says (JSON Schema's \s lacks \x1c-\x1f, \x85)
    ("POST", "/sessions/{sid}/stream", None, b'{"message": "\\u001f"}', 422, "validation_error"),
    ("POST", "/sessions/{sid}/stream", None, b'{"message": "\\u0085 \\ufeff"}', 422, "validation_error"),
    (
        "POST",
        "/chat",
        None,
        _ui(messages=[{"id": "u1", "role": "user", "parts": [{"type": "text", "text": "\x1c\ufeff"}]}]),
        422,
        "validation_error",
    ),
    ("POST", "/sessions/bad%20id/stream", None, b'{"message": "hi"}', 400, "bad_request"),
    ("POST", "/sessions/unknown-session-0001/stream", None, b'{"message": "hi"}', 404, "not_found"),
    ("POST", "/sessions/{sid}/stream", "bob", b'{"message": "hi"}', 404, "not_found"),
    ("GET", "/chat/{sid}/stream", {"last-event-id": "1-0; DROP"}, None, 400, "bad_request"),
    ("POST", "/chat", {"x-ui-stream-protocol": "v4"}, _ui(), 400, "bad_request"),
    ("POST", "/sessions/{sid}/stream", {"x-ui-stream-protocol": "7"}, b'{"message": "hi"}', 400, "bad_request"),
    ("GET", "/chat/{sid}/stream", {"x-ui-stream-protocol": "latest"}, None, 400, "bad_request"),
    ("GET", "/chat/bad%20id/stream", None, None, 400, "bad_request"),
    ("POST", "/chat/bad%20id/stop", None, None, 400, "bad_request"),
    ("DELETE", "/chat/{sid}/stop", None, None, 405, "method_not_allowed"),
]


@pytest.mark.parametrize(("method", "path", "headers", "body", "status", "code"), BAD)
def test_bad_chat_input(chat_stack: ChatStack, method, path, headers, body, status, code):
    with chat_stack.client() as client:
        sid = client.post("/sessions", json={"title": "t"}).json()["id"]
        before = _scan(chat_stack.settings.table_name)
        request_headers = dict(JSON)
        if headers == "bob":
            request_headers["authorization"] = f"Bearer {make_token('bob', secret=chat_stack.settings.jwt_secret)}"
        elif headers == {}:
            request_headers["authorization"] = ""
        elif headers:
            request_headers.update(headers)
        response = client.request(method, path.format(sid=sid), content=body, headers=request_headers)
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/json"
        assert response.json()["error"]["code"] == code
        assert _scan(chat_stack.settings.table_name) == before
        assert not chat_stack.llm.requests


def test_numbers_and_text_that_cannot_be_stored_are_422_and_write_nothing(chat_stack: ChatStack):
    """Issue 12 item 7: 1e400 was a 500 that still wrote the session (and broke every later listing); a lone
    surrogate was a 500/503; "?limit=²" was a 500."""
    json_headers = {"content-type": "application/json"}
    with chat_stack.client() as client:
        sid = client.post("/sessions", json={"title": "kept"}).json()["id"]
        bad_bodies = [
            ("POST", "/sessions", b'{"metadata": {"n": 1e400}}'),
            ("POST", "/sessions", b'{"title": "\\ud800"}'),
            ("POST", "/sessions", b'{"metadata": {"\\udfff": 1}}'),
            ("PATCH", f"/sessions/{sid}", b'{"metadata": {"n": -1e999}}'),
            ("PATCH", f"/sessions/{sid}", b'{"title": "x\\ud83d"}'),
            ("POST", f"/sessions/{sid}/stream", b'{"message": "hi \\ud800"}'),
            (
                "POST",
                "/chat",
                b'{"id": "surrogate-chat-0001", "messages": [{"id": "m1", "role": "user",'
                b' "parts": [{"type": "text", "text": "\\udc00"}]}]}',
            ),
        ]
        for method, path, body in bad_bodies:
            response = client.request(method, path, content=body, headers=json_headers)
            assert response.status_code == 422, (method, path, body, response.text)
            error = response.json()["error"]
            assert error["code"] == "validation_error" and error["details"][0]["loc"], error
        listing = client.get("/sessions")
        assert listing.status_code == 200
        assert [s["id"] for s in listing.json()["sessions"]] == [sid]  # nothing else was written
        assert client.get(f"/sessions/{sid}").json()["title"] == "kept"
        assert client.get("/sessions/surrogate-chat-0001").status_code == 404
        for query in ("limit=\u00b2", "limit=\u0661\u0660", "limit=5\u00b2"):
            response = client.get(f"/sessions?{query}")
            assert response.status_code == 400 and response.json()["error"]["code"] == "bad_request", query


def test_the_local_stack_lets_a_browser_send_the_protocol_level_header(table_name: str, redis_url: str):
    """A front end on another origin sets x-ui-stream-protocol: the CORS preflight must allow it (the template's
    Function URL CORS is checked in tests/test_deployment.py)."""
    origin = "http://front.example"
    chat = start_chat_stack(table_name, redis_url, cors_allow_origins=(origin,))
    try:
        with httpx.Client(base_url=chat.url, timeout=10) as client:
            preflight = client.options(
                "/chat",
                headers={
                    "origin": origin,
                    "access-control-request-method": "POST",
                    "access-control-request-headers": f"authorization, content-type, {LEVEL_HEADER}",
                },
            )
        assert preflight.status_code == 200, preflight.text
        assert LEVEL_HEADER in preflight.headers["access-control-allow-headers"].lower()
    finally:
        stop_chat_stack(chat)
