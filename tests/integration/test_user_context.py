"""Per-user context: the HTTP routes (versions, bounds, isolation), the cache beside the session (one Redis round
trip on a warm turn, DynamoDB alone without Redis) and the system prompt of a chat turn over HTTP."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import boto3
import httpx
import pytest

from chatcore.auth import Authenticator
from chatcore.config import Settings
from chatcore.container import Container
from chatcore.tools import ToolRegistry
from chatcore.web.sessions_app import create_sessions_app
from tests.conftest import ChatStack, start_chat_stack, stop_chat_stack
from tests.support.redis_counting import CountingConnector
from tests.support.redis_server import RedisServer
from tests.support.tokens import auth_header
from tests.unit.fakes import ScriptedModel, text

ALICE = auth_header("alice")
BOB = auth_header("bob")
HEADING = "What you know about the user:"


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    container = Container(settings)
    app = create_sessions_app(container.sessions, Authenticator(settings), settings, contexts=container.user_contexts)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
        yield c
    await container.aclose()


def _items(table: str) -> list[str]:
    return sorted(json.dumps(i, sort_keys=True) for i in boto3.client("dynamodb").scan(TableName=table)["Items"])


@pytest.mark.anyio
async def test_put_get_versions_and_clear(client: httpx.AsyncClient, settings: Settings):
    empty = await client.get("/users/me/context", headers=ALICE)
    assert empty.status_code == 200 and empty.json() == {"context": "", "version": 0, "updated_at": None}

    put = await client.put(
        "/users/me/context", json={"context": "  Works at ACME.\n\tPrefers metric units.\n"}, headers=ALICE
    )
    assert put.status_code == 200, put.text
    first = put.json()
    assert first["context"] == "Works at ACME.\n\tPrefers metric units." and first["version"] == 1
    assert (await client.get("/users/me/context", headers=ALICE)).json() == first

    # Two devices read version 1; the first write wins, the second is refused and writes nothing.
    won = await client.put("/users/me/context", json={"context": "Works at Initech.", "version": 1}, headers=ALICE)
    assert won.status_code == 200 and won.json()["version"] == 2
    before = _items(settings.table_name)
    stale = await client.put("/users/me/context", json={"context": "Works at ACME!", "version": 1}, headers=ALICE)
    assert stale.status_code == 409, stale.text
    assert stale.json()["error"]["details"] == [{"loc": ["version"], "msg": "the stored version is 2"}]
    again = await client.put("/users/me/context", json={"context": "First!", "version": 0}, headers=ALICE)
    assert again.status_code == 409
    assert _items(settings.table_name) == before
    assert (await client.get("/users/me/context", headers=ALICE)).json()["context"] == "Works at Initech."

    # Another user sees and changes only their own.
    assert (await client.get("/users/me/context", headers=BOB)).json()["version"] == 0
    bobs = await client.put("/users/me/context", json={"context": "Bob likes tea.", "version": 0}, headers=BOB)
    assert bobs.status_code == 200 and bobs.json()["version"] == 1
    assert (await client.get("/users/me/context", headers=ALICE)).json()["context"] == "Works at Initech."

    # "" clears it; the version goes on (a cached older copy can never pass for the newest).
    cleared = await client.put("/users/me/context", json={"context": "", "version": 2}, headers=ALICE)
    assert cleared.status_code == 200 and cleared.json()["context"] == "" and cleared.json()["version"] == 3
    assert (await client.get("/users/me/context", headers=ALICE)).json()["context"] == ""


JSON = {"content-type": "application/json"}
BAD_BODIES = [
    ({"context": "x" * 4001}, 422),
    ({"context": "bell\u0007"}, 422),
    ({"context": "nul\u0000"}, 422),
    ({"context": 5}, 422),
    ({}, 422),
    ({"context": "ok", "version": -1}, 422),
    ({"context": "ok", "version": "1"}, 422),
    ({"context": "ok", "owner": "bob"}, 422),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("body", "status"), BAD_BODIES)
async def test_bad_bodies_are_4xx_and_write_nothing(
    client: httpx.AsyncClient, settings: Settings, body: dict[str, Any], status: int
):
    await client.put("/users/me/context", json={"context": "keep me"}, headers=ALICE)
    before = _items(settings.table_name)
    response = await client.put("/users/me/context", json=body, headers=ALICE)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == "validation_error"
    assert _items(settings.table_name) == before


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("headers", "raw", "status"),
    [
        ({}, b'{"context": "x"}', 401),
        (ALICE | JSON, b'{"context": "\\ud800"}', 422),  # a lone surrogate has no UTF-8 form
        (ALICE | JSON, b'{"context": ', 400),
        (ALICE | {"content-type": "text/plain"}, b'{"context": "x"}', 415),
        (ALICE | JSON, b'{"context": "' + b"x" * 300_000 + b'"}', 413),
    ],
)
async def test_bad_requests_write_nothing(
    client: httpx.AsyncClient, settings: Settings, headers: dict[str, str], raw: bytes, status: int
):
    before = _items(settings.table_name)
    response = await client.put("/users/me/context", content=raw, headers=headers)
    assert response.status_code == status, response.text
    assert _items(settings.table_name) == before
    assert (await client.get("/users/me/context", headers=ALICE)).json()["version"] == 0


@pytest.mark.anyio
async def test_the_bound_is_the_setting(settings: Settings):
    from dataclasses import replace

    small = replace(settings, user_context_max_chars=10)
    container = Container(small)
    app = create_sessions_app(container.sessions, Authenticator(small), small, contexts=container.user_contexts)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        assert (await c.put("/users/me/context", json={"context": "x" * 10}, headers=ALICE)).status_code == 200
        too_long = await c.put("/users/me/context", json={"context": "x" * 11}, headers=ALICE)
        assert too_long.status_code == 422
        assert too_long.json()["error"]["details"] == [{"loc": ["context"], "msg": "at most 10 characters"}]
    await container.aclose()


# -- the cache beside the session ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_warm_turn_reads_session_and_context_in_one_redis_round_trip(settings: Settings):
    connector = CountingConnector(settings.redis_url)
    model = ScriptedModel(scripts=[text("First."), text("Second.")])
    container = Container(settings, llm=model, connector=connector, tools=ToolRegistry())
    dynamodb: list[str] = []
    container.aws.dynamodb().meta.events.register(
        "before-call.dynamodb", lambda event_name, **_: dynamodb.append(event_name.rsplit(".", 1)[-1])
    )
    try:
        await container.user_contexts.put("alice", "Prefers metric units.")
        sid = (await container.sessions.create_session("alice", title="titled")).session_id
        engine = container.engine
        [_ async for _ in engine.stream_chat_completion(sid, "Hello", "alice")]
        connector.trips.clear()
        dynamodb.clear()
        [_ async for _ in engine.stream_chat_completion(sid, "Again", "alice")]
    finally:
        await container.aclose()
    session_key, context_key = f"chat:working-set:{sid}", "chat:user-context:alice"  # what a turn reads
    reads = [trip for trip in connector.trips if any(command[0] == "hget" for command in trip)]
    assert reads == [[("hget", session_key, "d"), ("hget", context_key, "d")]]
    assert connector.touching(context_key) == reads  # both were cached: nothing was filled in
    # Nor did DynamoDB serve a read: the lease, the user message, the answer (with the lease given back).
    assert dynamodb == ["UpdateItem", "TransactWriteItems", "TransactWriteItems"]
    assert model.requests[-1]["messages"][0]["content"] == (
        f"{Settings().system_prompt}\n\n{HEADING}\nPrefers metric units."
    )


@pytest.mark.anyio
async def test_misses_are_read_from_dynamodb_and_cached(settings: Settings):
    connector = CountingConnector(settings.redis_url)
    container = Container(settings, connector=connector)
    contexts = container.user_contexts
    try:
        sid = (await container.sessions.create_session("alice")).session_id
        await contexts.put("alice", "Lives in Lisbon.")
        await container.sessions.invalidate_session_cache(sid)
        await connector.client().delete("chat:user-context:alice")
        connector.trips.clear()
        session, context = await contexts.session_with_context(sid, "alice")
        assert session is not None and session.session_id == sid and context == "Lives in Lisbon."
        filled = [trip[0][0] for trip in connector.trips[1:]]
        assert connector.trips[0][0][0] == "hget" and filled == ["eval", "eval"]  # both cached again
        connector.trips.clear()
        assert (await contexts.session_with_context(sid, "alice"))[1] == "Lives in Lisbon."
        assert len(connector.trips) == 1
        # A user without a context: its absence is cached too (a warm turn of theirs reads no DynamoDB item).
        assert await contexts.context_of("bob") == ""
        assert (await contexts.session_with_context(sid, "bob")) == (session, "")
        assert await container.sessions.cache.get_user_context("bob") is not None
        # An anonymous caller has none, and nothing is read for them.
        assert await contexts.context_of(None) == ""
    finally:
        await container.aclose()


@pytest.mark.anyio
async def test_an_older_version_never_replaces_a_newer_cached_one(settings: Settings):
    container = Container(settings)
    contexts, cache = container.user_contexts, container.sessions.cache
    try:
        old = await contexts.get("alice")  # version 0, as a slow reader holds it
        new = await contexts.put("alice", "New.")
        assert await cache.put_user_context(old) is False
        assert (await contexts.get("alice")).context == "New." and new.version == 1
    finally:
        await container.aclose()


@pytest.mark.anyio
async def test_without_redis_everything_comes_from_dynamodb(table_name: str):
    from tests.support.tokens import SECRET

    server = RedisServer().start()
    settings = Settings(table_name=table_name, redis_url=server.url, jwt_secret=SECRET, redis_retry_after_seconds=60)
    container = Container(settings)
    app = create_sessions_app(container.sessions, Authenticator(settings), settings, contexts=container.user_contexts)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            assert (
                await client.put("/users/me/context", json={"context": "Cached."}, headers=ALICE)
            ).status_code == 200
            sid = (await client.post("/sessions", json={}, headers=ALICE)).json()["id"]
            server.stop()
            put = await client.put("/users/me/context", json={"context": "Uncached.", "version": 1}, headers=ALICE)
            assert put.status_code == 200 and put.json()["version"] == 2
            assert (await client.get("/users/me/context", headers=ALICE)).json()["context"] == "Uncached."
            session, context = await container.user_contexts.session_with_context(sid, "alice")
            assert session is not None and context == "Uncached."
    finally:
        await container.aclose()
        server.stop()


# -- over HTTP: the chat turn's system prompt ----------------------------------------------------------------------


def _system_prompt(chat: ChatStack) -> str:
    streamed = [r for r in chat.llm.requests if r.get("stream")]
    return str(streamed[-1]["messages"][0]["content"])


def test_the_context_goes_into_the_turns_system_prompt(chat_stack: ChatStack):
    with chat_stack.client() as alice, chat_stack.client("bob") as bob:
        assert alice.put("/users/me/context", json={"context": "Alice runs a bakery in Porto."}).status_code == 200
        assert bob.put("/users/me/context", json={"context": "Bob is a pilot."}).status_code == 200
        sid = alice.post("/sessions", json={}).json()["id"]
        assert alice.post(f"/sessions/{sid}/stream", json={"message": "Ideas for my shop?"}).status_code == 200
        prompt = _system_prompt(chat_stack)
        assert prompt.endswith(f"{HEADING}\nAlice runs a bakery in Porto.") and "pilot" not in prompt
        # Bob's turn in a session of Bob's own carries Bob's; Alice's session stays hers (404 for Bob).
        assert bob.post(f"/sessions/{sid}/stream", json={"message": "hi"}).status_code == 404
        bobs = bob.post("/sessions", json={}).json()["id"]
        assert bob.post(f"/sessions/{bobs}/stream", json={"message": "hi"}).status_code == 200
        assert _system_prompt(chat_stack).endswith(f"{HEADING}\nBob is a pilot.")
        # Changed: the next turn has the new one at once (the write went through to the cache); cleared: none.
        version = alice.get("/users/me/context").json()["version"]
        alice.put("/users/me/context", json={"context": "Alice sold the bakery.", "version": version})
        alice.post(f"/sessions/{sid}/stream", json={"message": "And now?"})
        assert _system_prompt(chat_stack).endswith("Alice sold the bakery.")
        alice.put("/users/me/context", json={"context": ""})
        alice.post(f"/sessions/{sid}/stream", json={"message": "And now?"})
        assert HEADING not in _system_prompt(chat_stack)


def test_turns_get_the_context_with_redis_stopped(table_name: str):
    server = RedisServer().start()
    chat = start_chat_stack(table_name, server.url, redis_retry_after_seconds=60.0)
    try:
        with chat.client() as client:
            assert client.put("/users/me/context", json={"context": "Speaks Portuguese."}).status_code == 200
            sid = client.post("/sessions", json={}).json()["id"]
            server.stop()
            assert client.post(f"/sessions/{sid}/stream", json={"message": "Olá"}).status_code == 200
            assert _system_prompt(chat).endswith(f"{HEADING}\nSpeaks Portuguese.")
            assert client.put("/users/me/context", json={"context": "Speaks Galician."}).status_code == 200
            assert client.post(f"/sessions/{sid}/stream", json={"message": "Olá"}).status_code == 200
            assert _system_prompt(chat).endswith(f"{HEADING}\nSpeaks Galician.")
    finally:
        stop_chat_stack(chat)
        server.stop()
