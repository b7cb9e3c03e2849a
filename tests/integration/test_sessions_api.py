"""The sessions HTTP API through its ASGI app: routes, isolation, and the bad-input table."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest

from chatcore.auth import Authenticator
from chatcore.config import Settings
from chatcore.sessions import SessionService
from chatcore.web.sessions_app import create_sessions_app
from tests.support.tokens import SECRET, auth_header, make_token

pytestmark = pytest.mark.anyio

ALICE = auth_header("alice")
BOB = auth_header("bob")


@pytest.fixture
async def client(service: SessionService, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_sessions_app(service, Authenticator(settings), settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
        yield c


async def _create(client: httpx.AsyncClient, headers=ALICE, **body) -> dict:
    response = await client.post("/sessions", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


async def test_crud_round_trip(client: httpx.AsyncClient, service: SessionService):
    created = await _create(client, title="  Trip to Lisbon ", chat_type="agent", metadata={"lang": "pt"})
    assert created["title"] == "Trip to Lisbon" and created["chat_type"] == "agent"
    assert created["user_id"] == "alice" and created["status"] == "active" and created["message_count"] == 0
    sid = created["id"]

    got = await client.get(f"/sessions/{sid}", headers=ALICE)
    assert got.status_code == 200 and got.json()["metadata"] == {"lang": "pt"}

    patched = await client.patch(f"/sessions/{sid}", json={"title": "Lisbon", "status": "archived"}, headers=ALICE)
    assert patched.status_code == 200
    assert patched.json()["title"] == "Lisbon" and patched.json()["status"] == "archived"

    listed = await client.get("/sessions", headers=ALICE)
    assert [s["id"] for s in listed.json()["sessions"]] == [sid]
    assert (await client.get("/sessions?status=active", headers=ALICE)).json()["sessions"] == []

    deleted = await client.delete(f"/sessions/{sid}", headers=ALICE)
    assert deleted.status_code == 204 and deleted.content == b""
    assert (await client.get(f"/sessions/{sid}", headers=ALICE)).status_code == 404
    assert (await client.delete(f"/sessions/{sid}", headers=ALICE)).status_code == 404
    assert await service.store.load(sid) is None


async def test_list_pages_with_opaque_cursor(client: httpx.AsyncClient):
    ids = [(await _create(client, title=f"s{i}"))["id"] for i in range(5)]
    await _create(client, headers=BOB)
    first = (await client.get("/sessions?limit=2", headers=ALICE)).json()
    second = (await client.get(f"/sessions?limit=2&cursor={first['next_cursor']}", headers=ALICE)).json()
    third = (await client.get(f"/sessions?limit=2&cursor={second['next_cursor']}", headers=ALICE)).json()
    seen = [s["id"] for page in (first, second, third) for s in page["sessions"]]
    assert seen == list(reversed(ids)) and third["next_cursor"] is None


async def test_messages_are_paged(client: httpx.AsyncClient, service: SessionService):
    from chatcore.models import ChatMessage

    sid = (await _create(client))["id"]
    session = await service.get_chat_session(sid, "alice")
    assert session is not None
    session.messages = [ChatMessage(role="user" if i % 2 == 0 else "assistant", content=f"m{i}") for i in range(7)]
    await service.upsert_chat_session(session)
    first = (await client.get(f"/sessions/{sid}/messages?limit=4", headers=ALICE)).json()
    assert [m["content"] for m in first["messages"]] == ["m0", "m1", "m2", "m3"]
    assert [m["seq"] for m in first["messages"]] == [1, 2, 3, 4]
    rest = (await client.get(f"/sessions/{sid}/messages?limit=4&cursor={first['next_cursor']}", headers=ALICE)).json()
    assert [m["content"] for m in rest["messages"]] == ["m4", "m5", "m6"] and rest["next_cursor"] is None


async def test_batch_delete(client: httpx.AsyncClient):
    mine = [(await _create(client))["id"] for _ in range(3)]
    theirs = (await _create(client, headers=BOB))["id"]
    response = await client.post("/sessions/batch-delete", json={"session_ids": [*mine, theirs]}, headers=ALICE)
    assert response.status_code == 200
    assert response.json() == {"deleted": mine, "not_found": [theirs]}
    assert (await client.get(f"/sessions/{theirs}", headers=BOB)).status_code == 200


async def test_other_users_session_is_404_on_every_route(client: httpx.AsyncClient):
    sid = (await _create(client, title="secret"))["id"]
    for method, path, body in [
        ("GET", f"/sessions/{sid}", None),
        ("GET", f"/sessions/{sid}/messages", None),
        ("PATCH", f"/sessions/{sid}", {"title": "pwned"}),
        ("DELETE", f"/sessions/{sid}", None),
    ]:
        response = await client.request(method, path, json=body, headers=BOB)
        assert response.status_code == 404, (method, path)
        assert response.json()["error"]["code"] == "not_found"
    assert (await client.get("/sessions", headers=BOB)).json()["sessions"] == []
    mine = (await client.get(f"/sessions/{sid}", headers=ALICE)).json()
    assert mine["title"] == "secret" and mine["version"] == 1


async def test_health_and_openapi_need_no_token(client: httpx.AsyncClient):
    health = await client.get("/health")
    assert health.status_code == 200 and health.json() == {"status": "ok", "cache": "enabled"}
    doc = (await client.get("/sessions/openapi.json")).json()
    assert doc["openapi"].startswith("3.1")
    assert set(doc["paths"]) == {
        "/health",
        "/sessions",
        "/sessions/batch-delete",
        "/sessions/{session_id}",
        "/sessions/{session_id}/messages",
        "/sessions/{session_id}/messages/{message_id}/feedback",
        "/sessions/{session_id}/messages/{message_id}/versions",
        "/sessions/{session_id}/branch",
        "/users/me/context",
    }
    schemas = doc["components"]["schemas"]
    assert {"SessionOut", "FeedbackIn", "FeedbackOut", "UserContextIn", "UserContextOut"} <= set(schemas)
    assert {"feedback", "versions", "parent_seq"} <= set(schemas["MessageOut"]["required"])
    assert {"VersionsOut", "SwitchBranchIn"} <= set(schemas)


EXPIRED = {"authorization": f"Bearer {make_token('alice', ttl=-120)}"}
FORGED = {"authorization": f"Bearer {make_token('alice', secret='x' * 40)}"}
JSON = {"content-type": "application/json"}
BAD_CURSOR = "eyJ1Ijoibm90LWEtZGF0ZSIsInMiOiJhYmNkZWZnaDEyMzQifQ"  # {"u":"not-a-date","s":"abcdefgh1234"}

# (method, path, headers, raw body, expected status, expected error code); {sid} is a session of alice.
BAD_INPUTS = [
    ("GET", "/sessions", {}, None, 401, "unauthorized"),
    ("GET", "/sessions", {"authorization": "Basic abc"}, None, 401, "unauthorized"),
    ("GET", "/sessions", {"authorization": "Bearer not.a.jwt"}, None, 401, "unauthorized"),
    ("GET", "/sessions", EXPIRED, None, 401, "unauthorized"),
    ("GET", "/sessions", FORGED, None, 401, "unauthorized"),
    ("POST", "/sessions", ALICE | JSON, b"{not json", 400, "bad_request"),
    ("POST", "/sessions", ALICE | JSON, b'{"title": NaN}', 400, "bad_request"),
    ("POST", "/sessions", ALICE | JSON, b"[1, 2]", 422, "validation_error"),
    ("POST", "/sessions", ALICE | JSON, b'{"title": 5}', 422, "validation_error"),
    ("POST", "/sessions", ALICE | JSON, b'{"owner": "bob"}', 422, "validation_error"),
    ("POST", "/sessions", ALICE | JSON, json.dumps({"title": "x" * 201}).encode(), 422, "validation_error"),
    ("POST", "/sessions", ALICE | JSON, b'{"title": "bell\\u0007"}', 422, "validation_error"),
    ("POST", "/sessions", ALICE | JSON, b'{"chat_type": "Has Spaces"}', 422, "validation_error"),
    ("POST", "/sessions", ALICE | JSON, json.dumps({"metadata": {"k": "v" * 3000}}).encode(), 422, "validation_error"),
    ("POST", "/sessions", ALICE | {"content-type": "text/plain"}, b'{"title": "x"}', 415, "unsupported_media_type"),
    ("POST", "/sessions", ALICE | JSON, b'{"title": "' + b"x" * 300_000 + b'"}', 413, "payload_too_large"),
    ("PUT", "/sessions", ALICE, None, 405, "method_not_allowed"),
    ("GET", "/nowhere", ALICE, None, 404, "not_found"),
    ("GET", "/sessions/", ALICE, None, 404, "not_found"),  # found by the fuzzer: was a bodiless redirect
    ("GET", "/sessions/bad%20id", ALICE, None, 400, "bad_request"),
    ("GET", "/sessions/x", ALICE, None, 400, "bad_request"),
    ("GET", "/sessions?limit=0", ALICE, None, 400, "bad_request"),
    ("GET", "/sessions?limit=101", ALICE, None, 400, "bad_request"),
    ("GET", "/sessions?limit=abc", ALICE, None, 400, "bad_request"),
    ("GET", "/sessions?limit=-1", ALICE, None, 400, "bad_request"),
    ("GET", "/sessions?cursor=%%%", ALICE, None, 400, "bad_request"),
    ("GET", "/sessions?cursor=bm90IGpzb24", ALICE, None, 400, "bad_request"),
    ("GET", f"/sessions?cursor={BAD_CURSOR}", ALICE, None, 400, "bad_request"),
    ("GET", "/sessions?cursor=" + "A" * 600, ALICE, None, 400, "bad_request"),
    ("GET", "/sessions?status=deleted", ALICE, None, 400, "bad_request"),
    ("GET", "/sessions?chat_type=BAD!", ALICE, None, 400, "bad_request"),
    ("GET", "/sessions?bogus=1", ALICE, None, 400, "bad_request"),
    ("GET", "/sessions/{sid}/messages?cursor=eyJhIjotMX0", ALICE, None, 400, "bad_request"),
    ("GET", "/sessions/{sid}/messages?limit=201", ALICE, None, 400, "bad_request"),
    ("PATCH", "/sessions/{sid}", ALICE | JSON, b"{}", 422, "validation_error"),
    ("PATCH", "/sessions/{sid}", ALICE | JSON, b'{"status": "deleted"}', 422, "validation_error"),
    ("PATCH", "/sessions/{sid}", ALICE | JSON, b'{"title": null, "version": 3}', 422, "validation_error"),
    ("PATCH", "/sessions/{sid}", ALICE | JSON, b"", 400, "bad_request"),
    ("PATCH", "/sessions/{sid}", BOB | JSON, b'{"title": "mine now"}', 404, "not_found"),
    ("DELETE", "/sessions/{sid}", BOB, None, 404, "not_found"),
    ("POST", "/sessions/batch-delete", ALICE | JSON, b'{"session_ids": []}', 422, "validation_error"),
    (
        "POST",
        "/sessions/batch-delete",
        ALICE | JSON,
        json.dumps({"session_ids": ["a" * 12] * 26}).encode(),
        422,
        "validation_error",
    ),
    ("POST", "/sessions/{sid}", ALICE | JSON, b"{}", 405, "method_not_allowed"),
]


async def _snapshot(service: SessionService, settings: Settings) -> list:
    import boto3

    client = boto3.client("dynamodb")
    items = client.scan(TableName=settings.table_name)["Items"]
    return sorted(json.dumps(item, sort_keys=True) for item in items)


@pytest.mark.parametrize(("method", "path", "headers", "body", "status", "code"), BAD_INPUTS)
async def test_bad_input_gets_4xx_json_and_changes_nothing(
    client: httpx.AsyncClient, service: SessionService, settings: Settings, method, path, headers, body, status, code
):
    sid = (await _create(client, title="keep me"))["id"]
    before = await _snapshot(service, settings)
    response = await client.request(method, path.format(sid=sid), headers=headers, content=body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == code and isinstance(error["message"], str) and error["message"]
    assert await _snapshot(service, settings) == before
    assert SECRET not in response.text
