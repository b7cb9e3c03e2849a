"""Feedback on answers over HTTP: one per answer (the turn id a ``useChat`` client holds), shown in the listing,
replaced, removed, counted as a metric, gone with its session; bad input and other users' sessions write nothing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import boto3
import httpx
import pytest

from chatcore.auth import Authenticator
from chatcore.config import Settings
from chatcore.container import Container
from chatcore.errors import NotFound
from chatcore.models import ChatMessage, ChatSession, Feedback
from chatcore.sessions import SessionService
from chatcore.web.sessions_app import create_sessions_app
from tests.conftest import ChatStack
from tests.support.sse import parse_sse
from tests.support.tokens import auth_header

ALICE = auth_header("alice")
BOB = auth_header("bob")
JSON = {"content-type": "application/json"}
TURN = "turn_answer0001"  # the answer of the seeded session


def _feedback_of(messages: list[dict]) -> list[tuple[str, dict | None]]:
    return [(m["role"], m["feedback"]) for m in messages]


def test_rate_an_answer_see_it_in_the_listing_replace_and_remove_it(chat_stack: ChatStack):
    with chat_stack.client() as client:
        sid = client.post("/sessions", json={}).json()["id"]
        first = parse_sse(client.post(f"/sessions/{sid}/stream", json={"message": "calculate 6*7"}).text)
        second = parse_sse(client.post(f"/sessions/{sid}/stream", json={"message": "Thanks"}).text)
        answer = first.of_type("start")[0]["messageId"]  # what useChat holds as the assistant message's id
        other = second.of_type("start")[0]["messageId"]
        path = f"/sessions/{sid}/messages/{answer}/feedback"

        rated = client.put(path, json={"rating": "up", "comment": "  Right first time.\n"})
        assert rated.status_code == 200, rated.text
        assert rated.json()["rating"] == "up" and rated.json()["comment"] == "Right first time."
        messages = client.get(f"/sessions/{sid}/messages").json()["messages"]
        # Every assistant message of that turn (the tool call and the answer) carries it; nothing else does.
        assert [(m["role"], m["turn_id"] == answer) for m in messages] == [
            ("user", True),
            ("assistant", True),
            ("tool", True),
            ("assistant", True),
            ("user", False),
            ("assistant", False),
        ]
        assert _feedback_of(messages) == [
            ("user", None),
            ("assistant", rated.json()),
            ("tool", None),
            ("assistant", rated.json()),
            ("user", None),
            ("assistant", None),
        ]

        # A second PUT replaces the first; the other answer is rated on its own.
        replaced = client.put(path, json={"rating": "down"})
        assert replaced.status_code == 200 and replaced.json()["comment"] is None
        assert client.put(f"/sessions/{sid}/messages/{other}/feedback", json={"rating": "up"}).status_code == 200
        messages = client.get(f"/sessions/{sid}/messages").json()["messages"]
        ratings = [m["feedback"]["rating"] if m["feedback"] else None for m in messages]
        assert ratings == [None, "down", None, "down", None, "up"]
        # The listing is paged: a page shows the feedback of its own answers.
        page = client.get(f"/sessions/{sid}/messages?limit=2&cursor=" + _cursor(client, sid, 4)).json()["messages"]
        assert [m["feedback"]["rating"] if m["feedback"] else None for m in page] == [None, "up"]

        assert client.delete(path).status_code == 204
        assert client.delete(path).status_code == 404
        messages = client.get(f"/sessions/{sid}/messages").json()["messages"]
        assert [m["feedback"]["rating"] if m["feedback"] else None for m in messages] == [None] * 5 + ["up"]


def _cursor(client: httpx.Client, sid: str, after: int) -> str:
    return client.get(f"/sessions/{sid}/messages?limit={after}").json()["next_cursor"]


# -- through the ASGI app, with a seeded session ---------------------------------------------------------------


@pytest.fixture
async def client(service: SessionService, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_sessions_app(service, Authenticator(settings), settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
        yield c


async def _seeded(service: SessionService, owner: str = "alice") -> str:
    session = ChatSession.new(owner, title="rated")
    session.messages = [
        ChatMessage(role="user", content="Hi", turn_id=TURN),
        ChatMessage(role="assistant", content="Hello!", turn_id=TURN),
    ]
    return (await service.upsert_chat_session(session)).session_id


def _items(table: str) -> list[str]:
    return sorted(json.dumps(i, sort_keys=True) for i in boto3.client("dynamodb").scan(TableName=table)["Items"])


# (method, path, headers, raw body, status, code); {sid} is alice's seeded session, whose answer is TURN.
BAD_INPUTS = [
    (
        "PUT",
        "/sessions/{sid}/messages/" + TURN + "/feedback",
        ALICE | JSON,
        b'{"rating": "meh"}',
        422,
        "validation_error",
    ),
    ("PUT", "/sessions/{sid}/messages/" + TURN + "/feedback", ALICE | JSON, b"{}", 422, "validation_error"),
    ("PUT", "/sessions/{sid}/messages/" + TURN + "/feedback", ALICE | JSON, b'{"rating": 1}', 422, "validation_error"),
    (
        "PUT",
        "/sessions/{sid}/messages/" + TURN + "/feedback",
        ALICE | JSON,
        json.dumps({"rating": "up", "comment": "x" * 2001}).encode(),
        422,
        "validation_error",
    ),
    (
        "PUT",
        "/sessions/{sid}/messages/" + TURN + "/feedback",
        ALICE | JSON,
        b'{"rating": "up", "comment": "bell\\u0007"}',
        422,
        "validation_error",
    ),
    (
        "PUT",
        "/sessions/{sid}/messages/" + TURN + "/feedback",
        ALICE | JSON,
        b'{"rating": "up", "comment": "\\udfff"}',
        422,
        "validation_error",
    ),
    (
        "PUT",
        "/sessions/{sid}/messages/" + TURN + "/feedback",
        ALICE | JSON,
        b'{"rating": "up", "stars": 5}',
        422,
        "validation_error",
    ),
    ("PUT", "/sessions/{sid}/messages/" + TURN + "/feedback", ALICE | JSON, b'{"rating": ', 400, "bad_request"),
    ("PUT", "/sessions/{sid}/messages/" + TURN + "/feedback", {}, b'{"rating": "up"}', 401, "unauthorized"),
    ("PUT", "/sessions/{sid}/messages/" + TURN + "/feedback", BOB | JSON, b'{"rating": "up"}', 404, "not_found"),
    ("PUT", "/sessions/{sid}/messages/turn_unknown0001/feedback", ALICE | JSON, b'{"rating": "up"}', 404, "not_found"),
    ("PUT", "/sessions/{sid}/messages/bad%20id/feedback", ALICE | JSON, b'{"rating": "up"}', 400, "bad_request"),
    ("PUT", "/sessions/{sid}/messages/x/feedback", ALICE | JSON, b'{"rating": "up"}', 400, "bad_request"),
    (
        "PUT",
        "/sessions/nosuchsession1/messages/" + TURN + "/feedback",
        ALICE | JSON,
        b'{"rating": "up"}',
        404,
        "not_found",
    ),
    (
        "POST",
        "/sessions/{sid}/messages/" + TURN + "/feedback",
        ALICE | JSON,
        b'{"rating": "up"}',
        405,
        "method_not_allowed",
    ),
    ("DELETE", "/sessions/{sid}/messages/" + TURN + "/feedback", ALICE, None, 404, "not_found"),  # none stored
    ("DELETE", "/sessions/{sid}/messages/" + TURN + "/feedback", BOB, None, 404, "not_found"),
    ("DELETE", "/sessions/{sid}/messages/turn_unknown0001/feedback", ALICE, None, 404, "not_found"),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("method", "path", "headers", "body", "status", "code"), BAD_INPUTS)
async def test_bad_input_gets_4xx_json_and_writes_nothing(
    client: httpx.AsyncClient, service: SessionService, settings: Settings, method, path, headers, body, status, code
):
    sid = await _seeded(service)
    before = _items(settings.table_name)
    response = await client.request(method, path.format(sid=sid), headers=headers, content=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert _items(settings.table_name) == before


@pytest.mark.anyio
async def test_another_users_rating_cannot_be_removed_or_seen(client: httpx.AsyncClient, service: SessionService):
    sid = await _seeded(service)
    path = f"/sessions/{sid}/messages/{TURN}/feedback"
    assert (await client.put(path, json={"rating": "up"}, headers=ALICE)).status_code == 200
    assert (await client.delete(path, headers=BOB)).status_code == 404
    assert (await client.get(f"/sessions/{sid}/messages", headers=BOB)).status_code == 404
    listed = (await client.get(f"/sessions/{sid}/messages", headers=ALICE)).json()["messages"]
    assert listed[1]["feedback"]["rating"] == "up"


@pytest.mark.anyio
async def test_each_rating_is_counted_as_a_metric_by_rating(
    client: httpx.AsyncClient, service: SessionService, capsys: pytest.CaptureFixture[str], monkeypatch
):
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")  # the local stack turns them off for its console
    sid = await _seeded(service)
    capsys.readouterr()
    path = f"/sessions/{sid}/messages/{TURN}/feedback"
    assert (await client.put(path, json={"rating": "down", "comment": "wrong"}, headers=ALICE)).status_code == 200
    assert (await client.put(path, json={"rating": "nope"}, headers=ALICE)).status_code == 422  # not counted
    emitted = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"Feedback"' in line]
    assert len(emitted) == 1
    (metric,) = emitted
    assert metric["rating"] == "down" and metric["Feedback"] == [1.0]
    assert metric["_aws"]["CloudWatchMetrics"] == [
        {"Namespace": "ChatBackend", "Dimensions": [["rating"]], "Metrics": [{"Name": "Feedback", "Unit": "Count"}]}
    ]


@pytest.mark.anyio
async def test_deleting_the_session_deletes_its_feedback(
    client: httpx.AsyncClient, service: SessionService, settings: Settings
):
    sid = await _seeded(service)
    path = f"/sessions/{sid}/messages/{TURN}/feedback"
    assert (await client.put(path, json={"rating": "up"}, headers=ALICE)).status_code == 200
    assert any("FEEDBACK#" in item for item in _items(settings.table_name))
    assert (await client.delete(f"/sessions/{sid}", headers=ALICE)).status_code == 204
    assert not any("FEEDBACK#" in item for item in _items(settings.table_name))
    # A rating that races the delete cannot land beside the tombstone: its write checks the session in the same
    # transaction.
    before = _items(settings.table_name)
    with pytest.raises(NotFound):
        await service.store.put_feedback(sid, Feedback(turn_id=TURN, rating="up"), owner="alice")
    assert _items(settings.table_name) == before
    assert (await client.put(path, json={"rating": "up"}, headers=ALICE)).status_code == 404


@pytest.mark.anyio
async def test_feedback_stays_out_of_the_session_read(service: SessionService, settings: Settings):
    sid = await _seeded(service)
    await service.set_feedback(sid, "alice", TURN, "up", "good")
    loaded = await Container(settings).store.load(sid)
    assert loaded is not None and [m.content for m in loaded.messages] == ["Hi", "Hello!"]
    assert loaded.message_count == 2
