"""Hostile input against every route of the three HTTP apps on the loopback stack: each kind of credential that
is not the owner's, bodies no parser should choke on, tampered cursors, forged, stale and replayed callback
signatures. Every answer is a JSON 4xx (or the caller's own, empty view), never a 5xx; nothing of another user's
shows in it; and a refused request writes nothing (the table scanned before and after).

Rows covered elsewhere and not repeated here: random methods x paths x bodies x tokens on the sessions app
(``tests/integration/test_sessions_fuzz.py``), the bad-input tables of both apps (``test_sessions_api.py``,
``test_chat_inputs.py``: NaN, 1e400, lone surrogates, oversized bodies), a callback signed for another operation or
action, and a replay of an accepted completion (``test_operations.py``)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from chatcore.signing import signed_headers
from tests.conftest import ChatStack
from tests.hostile.conftest import AUDIENCE, ISSUER, bearer, scan, token
from tests.integration.test_chat_turns import ui_body
from tests.support.tokens import make_token

JSON = {"content-type": "application/json"}
SECRET_TITLE = "alice-private-title-7f3a"
SECRET_TEXT = "alice private question 91c2"


@dataclass
class Owned:
    """Alice's data every hostile request aims at."""

    session_id: str
    turn_id: str
    message_id: str
    other_ids: list[str]


@pytest.fixture(scope="module")
def alice(hostile_stack: ChatStack) -> Iterator[Owned]:
    headers = bearer(hostile_stack, "alice")
    with httpx.Client(base_url=hostile_stack.url, headers=headers, timeout=30) as client:
        created = client.post("/sessions", json={"title": SECRET_TITLE, "metadata": {"k": "alice"}})
        assert created.status_code == 201, created.text
        sid = created.json()["id"]
        answered = client.post("/chat", json=ui_body(sid, SECRET_TEXT, "alice-msg-0001"))
        assert answered.status_code == 200 and "finish" in answered.text
        messages = client.get(f"/sessions/{sid}/messages").json()["messages"]
        assert [m["role"] for m in messages] == ["user", "assistant"]
        # More sessions, so that listings have a next page (and a cursor to tamper with).
        others = [client.post("/sessions", json={"title": f"alice {n}"}).json()["id"] for n in range(3)]
        yield Owned(sid, messages[1]["turn_id"], messages[0]["id"], others)


def _routes(owned: Owned) -> list[tuple[str, str, Any]]:
    """Every route of the sessions and chat apps that needs a token, aimed at alice's data."""
    sid, turn = owned.session_id, owned.turn_id
    return [
        ("GET", "/sessions", None),
        ("POST", "/sessions", {"title": "intruder"}),
        ("POST", "/sessions/batch-delete", {"session_ids": [sid]}),
        ("GET", f"/sessions/{sid}", None),
        ("PATCH", f"/sessions/{sid}", {"title": "pwned"}),
        ("DELETE", f"/sessions/{sid}", None),
        ("GET", f"/sessions/{sid}/messages", None),
        ("GET", f"/sessions/{sid}/messages/{owned.message_id}/versions", None),
        ("PUT", f"/sessions/{sid}/branch", {"message_id": owned.message_id}),
        ("PUT", f"/sessions/{sid}/messages/{turn}/feedback", {"rating": "down"}),
        ("DELETE", f"/sessions/{sid}/messages/{turn}/feedback", None),
        ("GET", "/users/me/context", None),
        ("PUT", "/users/me/context", {"context": "intruder"}),
        ("POST", "/chat", ui_body(sid, "intruder", "bob-msg-0001")),
        ("POST", "/chat", {**ui_body(sid, "x"), "trigger": "regenerate-message", "messageId": turn}),
        ("POST", f"/sessions/{sid}/stream", {"message": "intruder"}),
        ("GET", f"/chat/{sid}/stream", None),
        ("POST", f"/chat/{sid}/stop", None),
        ("POST", f"/chat/{sid}/approvals/appr_0000000001", {"approved": True}),
    ]


def _b64(data: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def _token_kinds(stack: ChatStack) -> dict[str, dict[str, str]]:
    """Every way a request can come without alice's valid token (other than as bob, which is checked apart)."""
    now = int(time.time())
    valid = token(stack, "alice")
    head, payload, signature = valid.split(".")
    unsigned = _b64({"alg": "none", "typ": "JWT"}) + "." + payload + "."
    return {
        "anonymous": {},
        "empty": {"authorization": ""},
        "basic": {"authorization": "Basic YWxpY2U6cGFzcw=="},
        "malformed": {"authorization": "Bearer not.a.jwt"},
        "expired": bearer(stack, "alice", exp=now - 3600, iat=now - 7200),
        "not yet valid": bearer(stack, "alice", nbf=now + 3600),
        "issued in the future": bearer(stack, "alice", iat=now + 3600),
        "wrong signature": {"authorization": f"Bearer {head}.{payload}.{signature[::-1]}"},
        "other secret": {"authorization": f"Bearer {make_token('alice', secret='s' * 40, aud=AUDIENCE, iss=ISSUER)}"},
        "alg none": {"authorization": f"Bearer {unsigned}"},
        "wrong audience": bearer(stack, "alice", aud="another-api"),
        "wrong issuer": bearer(stack, "alice", iss="https://evil.test"),
        "no subject": bearer(stack, "", sub=None),
        "oversized": {"authorization": "Bearer " + "a" * 9000},
        "no bearer scheme": {"authorization": valid},
        "header injection": {"authorization": f"Bearer {valid}, Bearer {valid}"},
    }


def _assert_json_error(response: httpx.Response, *statuses: int) -> dict[str, Any]:
    assert response.status_code in statuses, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    error: dict[str, Any] = response.json()["error"]
    assert isinstance(error["code"], str) and isinstance(error["message"], str)
    return error


def test_every_token_that_is_not_alices_is_401_on_every_route_and_writes_nothing(
    hostile_stack: ChatStack, alice: Owned
) -> None:
    table = hostile_stack.settings.table_name
    kinds = _token_kinds(hostile_stack)
    with httpx.Client(base_url=hostile_stack.url, timeout=30) as client:
        before = scan(table)
        for method, path, body in _routes(alice):
            for kind, headers in kinds.items():
                response = client.request(method, path, json=body, headers=headers)
                error = _assert_json_error(response, 401)
                assert error["code"] == "unauthorized", (kind, method, path)
                assert response.headers["www-authenticate"].startswith("Bearer"), (kind, method, path)
                assert SECRET_TITLE not in response.text and SECRET_TEXT not in response.text
        assert scan(table) == before
    assert not any(SECRET_TEXT in str(request) for request in hostile_stack.llm.requests[1:])


def test_another_user_sees_none_of_alices_data_and_changes_nothing_of_it(
    hostile_stack: ChatStack, alice: Owned
) -> None:
    """Bob, with a valid token: alice's session is 404 on every route that names it; the routes of "his own" data
    (the listing, his context, a new session) show him only his, and write only his."""
    table = hostile_stack.settings.table_name
    own_routes = {
        ("GET", "/sessions"),
        ("POST", "/sessions"),
        ("GET", "/users/me/context"),
        ("PUT", "/users/me/context"),
    }
    with httpx.Client(base_url=hostile_stack.url, headers=bearer(hostile_stack, "bob"), timeout=30) as bob:
        for method, path, body in _routes(alice):
            before = scan(table)
            response = bob.request(method, path, json=body)
            assert response.status_code < 500, (method, path, response.text)
            assert SECRET_TITLE not in response.text and SECRET_TEXT not in response.text, (method, path)
            assert alice.session_id not in response.text or path.startswith("/sessions/batch-delete"), (method, path)
            if (method, path) in own_routes:
                assert response.status_code in (200, 201), (method, path, response.text)
                continue
            if path == "/sessions/batch-delete":
                assert response.json() == {"deleted": [], "not_found": [alice.session_id]}
            else:
                assert _assert_json_error(response, 404)["code"] == "not_found", (method, path)
            assert scan(table) == before, (method, path)
        listed = bob.get("/sessions").json()["sessions"]
        assert {s["user_id"] for s in listed} <= {"bob"} and len(listed) == 1  # the one he created above
        assert bob.get("/users/me/context").json()["context"] == "intruder"
    with httpx.Client(base_url=hostile_stack.url, headers=bearer(hostile_stack, "alice"), timeout=30) as owner:
        mine = owner.get(f"/sessions/{alice.session_id}").json()
        assert mine["title"] == SECRET_TITLE and mine["version"] >= 1
        messages = owner.get(f"/sessions/{alice.session_id}/messages").json()["messages"]
        assert [m["role"] for m in messages] == ["user", "assistant"] and messages[1]["feedback"] is None
        assert owner.get("/users/me/context").json()["context"] == ""


# -- bodies ----------------------------------------------------------------------------------------------------

# Deeper than any JSON parser recurses (Python's stops near 1,000), within every body limit (the callback's is 64 KiB).
NESTED = b"[" * 20_000 + b"]" * 20_000
NESTED_OBJECT = b'{"a":' * 5_000 + b"1" + b"}" * 5_000
BODIES: dict[str, tuple[bytes, tuple[int, ...]]] = {
    "invalid UTF-8": (b'{"title": "\xff\xfe\xfd", "message": "\xc3\x28", "context": "\xed\xa0\x80"}', (400,)),
    "overlong UTF-8": (b'{"title": "\xc0\xaf"}', (400,)),
    "UTF-8 encoded surrogate": (b'{"title": "\xed\xa0\x80"}', (422,)),  # json.loads decodes with surrogatepass
    "lone surrogate escape": (b'{"title": "\\ud800", "message": "\\udfff", "context": "\\ud83d"}', (422,)),
    "surrogate key": (b'{"\\udc00": 1}', (422,)),
    "deeply nested array": (NESTED, (400,)),
    "deeply nested object": (NESTED_OBJECT, (400,)),
    "NaN": (b'{"title": NaN, "output": NaN}', (400,)),
    "Infinity": (b'{"metadata": {"n": Infinity}, "output": -Infinity}', (400,)),
    "1e400": (b'{"metadata": {"n": 1e400}, "output": 1e400}', (422,)),
    "NUL": (b'{"title": "a\\u0000b", "message": "\\u0000", "context": "\\u0000"}', (404, 409, 422)),
    "not JSON": (b"title=x&message=y", (400,)),
    "JSON scalar": (b'"just a string"', (422,)),
    "trailing garbage": (b'{"title": "x"} {"title": "y"}', (400,)),
}


def _body_routes(owned: Owned) -> list[tuple[str, str]]:
    sid = owned.session_id
    return [
        ("POST", "/sessions"),
        ("POST", "/sessions/batch-delete"),
        ("PATCH", f"/sessions/{sid}"),
        ("PUT", f"/sessions/{sid}/branch"),
        ("PUT", f"/sessions/{sid}/messages/{owned.turn_id}/feedback"),
        ("PUT", "/users/me/context"),
        ("POST", "/chat"),
        ("POST", f"/sessions/{sid}/stream"),
        ("POST", f"/chat/{sid}/approvals/appr_0000000001"),
    ]


@pytest.mark.parametrize("kind", list(BODIES))
def test_hostile_bodies_are_4xx_json_and_write_nothing(hostile_stack: ChatStack, alice: Owned, kind: str) -> None:
    body, statuses = BODIES[kind]
    table = hostile_stack.settings.table_name
    with httpx.Client(base_url=hostile_stack.url, headers=bearer(hostile_stack, "alice") | JSON, timeout=30) as client:
        before = scan(table)
        for method, path in _body_routes(alice):
            response = client.request(method, path, content=body)
            # A JSON scalar or an object of unknown fields: 422 by the model; the NUL title is a control character
            # (422) where a title is read, and elsewhere an unknown field or a missing one (also 422).
            _assert_json_error(response, *statuses, 413, 422)
        assert scan(table) == before


def test_oversized_bodies_are_413_declared_or_not(hostile_stack: ChatStack, alice: Owned) -> None:
    table = hostile_stack.settings.table_name
    big = b'{"title": "' + b"x" * (hostile_stack.settings.max_body_bytes * 8 + 10) + b'"}'

    def chunks() -> Iterator[bytes]:  # no content-length: the limit holds on what arrives
        for start in range(0, len(big), 65_536):
            yield big[start : start + 65_536]

    with httpx.Client(base_url=hostile_stack.url, headers=bearer(hostile_stack, "alice") | JSON, timeout=30) as client:
        before = scan(table)
        for method, path in _body_routes(alice):
            assert _assert_json_error(client.request(method, path, content=big), 413)["code"] == "payload_too_large"
            assert (
                _assert_json_error(client.request(method, path, content=chunks()), 413)["code"] == "payload_too_large"
            )
        assert scan(table) == before


# -- cursors ---------------------------------------------------------------------------------------------------


def _tampered(cursor: str) -> list[str]:
    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    return [
        cursor[:-1] + ("A" if cursor[-1] != "A" else "B"),
        cursor[: len(cursor) // 2],
        cursor + "=",
        cursor + "%00",
        "!" + cursor,
        cursor * 8,
        base64.urlsafe_b64encode(raw[:-1]).decode(),
        base64.urlsafe_b64encode(raw + b" ").decode(),
        base64.urlsafe_b64encode(raw.replace(b'"', b"'")).decode(),
        _b64({}),
        _b64([1]),
        _b64({"u": None, "s": None}),
        _b64({"u": "2026-01-01T00:00:00+00:00", "s": "x" * 600}),
        _b64({"u": "2026-01-01T00:00:00+00:00", "s": "../../etc"}),
        _b64({"u": "not a date", "s": "abcdefgh1234"}),
        _b64({"u": "2026-01-01T00:00:00+00:00", "s": "abcdefgh1234", "x": 1}),
        _b64({"a": -1}),
        _b64({"a": 1.5}),
        _b64({"a": "3"}),
        _b64({"a": True}),
        _b64({"a": 10**30}),
        "ééé",
        "\u202e" + cursor,
        "",
    ]


def test_tampered_cursors_are_400_and_never_show_another_users_data(hostile_stack: ChatStack, alice: Owned) -> None:
    table = hostile_stack.settings.table_name
    with httpx.Client(base_url=hostile_stack.url, headers=bearer(hostile_stack, "alice"), timeout=30) as owner:
        sessions_cursor = owner.get("/sessions", params={"limit": 1}).json()["next_cursor"]
        messages_cursor = owner.get(f"/sessions/{alice.session_id}/messages", params={"limit": 1}).json()["next_cursor"]
    assert sessions_cursor and messages_cursor
    listings = [("/sessions", sessions_cursor), (f"/sessions/{alice.session_id}/messages", messages_cursor)]
    before = scan(table)
    with httpx.Client(base_url=hostile_stack.url, headers=bearer(hostile_stack, "alice"), timeout=30) as client:
        for path, cursor in listings:
            other = sessions_cursor if cursor is messages_cursor else messages_cursor
            for bad in [*_tampered(cursor), other]:  # a cursor of the other listing is no cursor of this one
                response = client.get(path, params={"cursor": bad})
                if response.status_code == 200:  # a well-formed position: a page of alice's own, nothing more
                    page = response.json()
                    assert all(s["user_id"] == "alice" for s in page.get("sessions", [])), bad
                    assert all(m["role"] in ("user", "assistant") for m in page.get("messages", [])), bad
                    assert bad.startswith("eyJ"), bad
                    continue
                assert _assert_json_error(response, 400)["code"] == "bad_request", bad
    # A cursor carries no identity: bob with alice's cursor pages his own (empty) listing.
    with httpx.Client(base_url=hostile_stack.url, headers=bearer(hostile_stack, "carol"), timeout=30) as carol:
        page = carol.get("/sessions", params={"cursor": sessions_cursor}).json()
        assert page == {"sessions": [], "next_cursor": None}
        assert (
            carol.get(f"/sessions/{alice.session_id}/messages", params={"cursor": messages_cursor}).status_code == 404
        )
    assert scan(table) == before


# -- callback signatures ---------------------------------------------------------------------------------------

OPERATION = "op_" + "ab" * 20


def test_forged_stale_and_replayed_callback_signatures_are_401_and_write_nothing(hostile_stack: ChatStack) -> None:
    secret = hostile_stack.settings.callback_secret
    table = hostile_stack.settings.table_name
    path = f"/operations/{OPERATION}/complete"
    body = b'{"output": {"ok": true}}'
    now = time.time()

    def signed(**changes: Any) -> dict[str, str]:
        args: dict[str, Any] = {"secret": secret, "method": "POST", "path": path, "body": body, "now": now}
        args.update(changes)
        return signed_headers(args["secret"], args["method"], args["path"], args["body"], now=args["now"])

    good = signed()
    refused: dict[str, tuple[dict[str, str], bytes]] = {
        "unsigned": ({}, body),
        "other secret": (signed(secret="x" * 43), body),
        "stale (6 minutes old)": (signed(now=now - 360), body),
        "from the future": (signed(now=now + 360), body),
        "body changed after signing": (good, b'{"output": {"ok": false}}'),
        "signed for GET": (signed(method="GET"), body),
        "signed for fail": (signed(path=f"/operations/{OPERATION}/fail"), body),
        "timestamp changed": ({**good, "x-chat-timestamp": str(int(now) + 1)}, body),
        "signature upper-case": ({**good, "x-chat-signature": good["x-chat-signature"].upper()}, body),
        "signature truncated": ({**good, "x-chat-signature": good["x-chat-signature"][:-2]}, body),
        "signature doubled": ({**good, "x-chat-signature": good["x-chat-signature"] * 2}, body),
        "no sha256= prefix": ({**good, "x-chat-signature": good["x-chat-signature"][7:]}, body),
        "negative timestamp": ({**good, "x-chat-timestamp": "-1"}, body),
        "huge timestamp": ({**good, "x-chat-timestamp": "9" * 40}, body),
        "float timestamp": ({**good, "x-chat-timestamp": f"{now:.3f}"}, body),
    }
    with httpx.Client(base_url=hostile_stack.url, timeout=30) as client:
        before = scan(table)
        for kind, (headers, content) in refused.items():
            response = client.post(path, content=content, headers=JSON | headers)
            assert _assert_json_error(response, 401)["code"] == "unauthorized", kind
        assert scan(table) == before
        # Authentic: verified, its signature remembered, then 404 (no such operation). The same bytes again are a
        # replay: 401, and that second request writes nothing.
        first = client.post(path, content=body, headers=JSON | good)
        assert _assert_json_error(first, 404)["code"] == "not_found"
        after_first = scan(table)
        replay = client.post(path, content=body, headers=JSON | good)
        assert _assert_json_error(replay, 401)["code"] == "unauthorized"
        assert "already used" in replay.json()["error"]["message"]
        assert scan(table) == after_first


@pytest.mark.parametrize("kind", list(BODIES))
def test_hostile_bodies_to_the_callback_app_are_4xx_even_when_signed(hostile_stack: ChatStack, kind: str) -> None:
    """Signed correctly, so that the body is parsed: it is refused like any other app's (a deep nesting was a 500)."""
    body, _ = BODIES[kind]
    secret = hostile_stack.settings.callback_secret
    table = hostile_stack.settings.table_name
    with httpx.Client(base_url=hostile_stack.url, timeout=30) as client:
        for action in ("complete", "fail", "heartbeat"):
            path = f"/operations/{OPERATION}/{action}"
            before = scan(table)
            response = client.post(path, content=body, headers=JSON | signed_headers(secret, "POST", path, body))
            # 404: a body the parser takes (a scalar, a NUL) reaches the operation lookup, which finds none.
            _assert_json_error(response, 400, 404, 413, 422)
            after = scan(table)
            assert set(before) <= set(after) and len(set(after) - set(before)) <= 1  # at most the signature
