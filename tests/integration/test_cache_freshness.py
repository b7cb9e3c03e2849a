"""A cached copy is never served once DynamoDB holds something newer: not after Redis was frozen in the middle of a
write-through (SIGSTOP/SIGCONT of a real redis-server), not after it was killed and came back empty while a slow
reader put an old copy into it, not while a writer's circuit was open and its invalidations were skipped."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import redis

from chatcore.auth import Authenticator
from chatcore.cache import session_key, working_set_key
from chatcore.config import Settings
from chatcore.container import Container
from chatcore.models import ChatMessage, ChatSession
from chatcore.sessions import SessionService
from chatcore.web.sessions_app import create_sessions_app
from tests.conftest import ChatStack
from tests.integration.test_chat_branches import _last_prompt, _regenerate_body, _user
from tests.integration.test_chat_turns import ui_body
from tests.support.redis_server import RedisServer, free_port
from tests.support.sse import parse_sse
from tests.support.tokens import SECRET, auth_header


def _settings(table_name: str, server: RedisServer, *, retry_after: float = 60.0) -> Settings:
    return Settings(
        table_name=table_name,
        redis_url=server.url,
        redis_retry_after_seconds=retry_after,
        auth_mode="hs256",
        jwt_secret=SECRET,
    )


async def _append(service: SessionService, session: ChatSession, *texts: str) -> ChatSession:
    for text in texts:
        session.messages.append(ChatMessage(role="user", content=text))
    return await service.upsert_chat_session(session)


def _cached_version(url: str, session_id: str, key: Callable[[str], str] = session_key) -> int | None:
    """The version of the copy Redis holds (None when it holds no data for the session): the whole session's, or
    with ``key=working_set_key`` the copy a chat turn reads."""
    client = redis.Redis.from_url(url)
    try:
        raw = client.hmget(key(session_id), ["v", "d"])
    finally:
        client.close()
    return None if raw[1] is None else int(raw[0])


@asynccontextmanager
async def _http(service: SessionService, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_sessions_app(service, Authenticator(settings), settings)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=auth_header("alice")) as client:
        yield client


async def _assert_fresh(client: httpx.AsyncClient, saved: ChatSession) -> None:
    """``GET /sessions/{id}`` and its messages show what DynamoDB holds."""
    shown = (await client.get(f"/sessions/{saved.session_id}")).json()
    assert (shown["version"], shown["message_count"]) == (saved.version, saved.message_count)
    page = (await client.get(f"/sessions/{saved.session_id}/messages")).json()
    assert [m["content"] for m in page["messages"]] == [m.content for m in saved.messages]


@pytest.mark.anyio
async def test_redis_frozen_mid_write_through(table_name: str):
    server = RedisServer().start()
    settings = _settings(table_name, server, retry_after=0.5)
    writer = Container(settings).sessions
    reader = Container(settings).sessions  # another function instance, whose circuit never opened
    try:
        saved = await _append(writer, await writer.upsert_chat_session(ChatSession.new("alice")), "one", "two")
        async with _http(reader, settings) as client:
            await _assert_fresh(client, saved)
            assert _cached_version(server.url, saved.session_id) == saved.version
            server.pause()
            try:
                # The first write-through times out (Redis applies it once thawed, or never); the next is not
                # even sent: the writer's circuit is open.
                saved = await _append(writer, saved, "three")
                saved = await _append(writer, saved, "four")
            finally:
                server.resume()
            stale = _cached_version(server.url, saved.session_id)
            assert stale is not None and stale < saved.version  # Redis holds an old copy: reads must not show it
            await _assert_fresh(client, saved)
        await asyncio.sleep(0.6)  # the writer's own circuit closes after retry_after: its reads are fresh too
        assert writer.cache.connector.available()
        loaded = await writer.get_chat_session(saved.session_id, "alice")
        assert loaded is not None and [m.content for m in loaded.messages] == ["one", "two", "three", "four"]
    finally:
        await writer.aclose()
        await reader.aclose()
        server.stop()


@pytest.mark.anyio
async def test_redis_killed_and_restarted_empty_while_a_reader_held_an_old_copy(table_name: str):
    server = RedisServer().start()
    settings = _settings(table_name, server)
    writer_container, reader_container = Container(settings), Container(settings)
    writer, reader = writer_container.sessions, reader_container.sessions
    loaded, release = threading.Event(), threading.Event()

    def hold_after_query(**_: Any) -> None:  # runs in the reader's botocore thread: its load has read the old copy
        loaded.set()
        release.wait(10)

    try:
        saved = await _append(writer, await writer.upsert_chat_session(ChatSession.new("alice")), "one", "two")
        await writer.invalidate_session_cache(saved.session_id)
        reader_container.aws.dynamodb().meta.events.register("after-call.dynamodb.Query", hold_after_query)
        slow = asyncio.create_task(reader.get_chat_session(saved.session_id, "alice"))
        await asyncio.to_thread(loaded.wait, 10)
        reader_container.aws.dynamodb().meta.events.unregister("after-call.dynamodb.Query", hold_after_query)
        server.kill()
        saved = await _append(writer, saved, "three")  # its write-through finds no Redis
        server.start()  # empty: the version fence that would refuse the old copy is gone
        release.set()
        await slow  # the slow read ends by caching the copy it loaded before the write
        stale = _cached_version(server.url, saved.session_id)
        assert stale is not None and stale < saved.version
        async with _http(reader, settings) as client:
            await _assert_fresh(client, saved)
        third = Container(settings).sessions
        try:
            async with _http(third, settings) as client:
                await _assert_fresh(client, saved)
        finally:
            await third.aclose()
    finally:
        release.set()
        await writer.aclose()
        await reader.aclose()
        server.stop()


@pytest.mark.anyio
async def test_invalidations_skipped_while_the_circuit_was_open(table_name: str):
    server = RedisServer().start()
    settings = _settings(table_name, server)
    writer = Container(settings).sessions
    reader = Container(settings).sessions
    try:
        saved = await _append(writer, await writer.upsert_chat_session(ChatSession.new("alice")), "one", "two")
        async with _http(reader, settings) as client:
            await _assert_fresh(client, saved)
            server.pause()  # one timeout opens the writer's circuit; Redis is fine again a moment later
            try:
                await writer.get_chat_session(saved.session_id, "alice")
            finally:
                server.resume()
            assert not writer.cache.connector.available()
            saved = await _append(writer, saved, "three")  # no write-through: the circuit is open
            renamed = await writer.update_session_title(saved.session_id, "renamed", "alice")
            assert renamed is not None
            saved.version = renamed.version
            assert _cached_version(server.url, saved.session_id) == saved.version - 2  # the old copy is still cached
            await _assert_fresh(client, saved)
            assert (await client.get(f"/sessions/{saved.session_id}")).json()["title"] == "renamed"
    finally:
        await writer.aclose()
        await reader.aclose()
        server.stop()


async def _switch(service: SessionService, session_id: str, ref: str) -> ChatSession:
    try:
        return await service.switch_branch(session_id, "alice", ref)
    finally:
        await service.aclose()


def test_a_turn_continues_the_branch_dynamodb_holds_not_a_stale_cached_one(chat_stack: ChatStack):

    sid = "stale-branch-0001"
    unreachable = f"redis://127.0.0.1:{free_port()}/0"  # another instance, whose write-through never arrives
    elsewhere = Container(dataclasses.replace(chat_stack.settings, redis_url=unreachable)).sessions
    with chat_stack.client() as client:
        parse_sse(client.post("/chat", json=ui_body(sid, "Apples", "u-1")).text)
        parse_sse(client.post("/chat", json=ui_body(sid, "Pears", "u-1")).text)  # an edit: the Pears branch is active
        apples = client.get(f"/sessions/{sid}/messages/u-1/versions").json()["versions"][0]["id"]
        cached = _cached_version(chat_stack.settings.redis_url, sid, working_set_key)
        assert cached == client.get(f"/sessions/{sid}").json()["version"]
        switched = asyncio.run(_switch(elsewhere, sid, apples))
        assert cached is not None and cached < switched.version
        assert (
            _cached_version(chat_stack.settings.redis_url, sid, working_set_key) == cached
        )  # the cache still shows Pears
        parse_sse(client.post("/chat", json=ui_body(sid, "And then?", "u-2")).text)
        prompt = _last_prompt(chat_stack)
        assert [m["content"] for m in prompt if m["role"] == "user"] == ["Apples", "And then?"]


async def _append_exchange(service: SessionService, session_id: str, question: str, answer: str, turn: str) -> None:
    try:
        session = await service.get_chat_session(session_id, "alice")
        assert session is not None
        session.messages.append(ChatMessage(role="user", content=question, client_message_id="u-elsewhere"))
        session.messages.append(ChatMessage(role="assistant", content=answer, turn_id=turn))
        await service.upsert_chat_session(session)
    finally:
        await service.aclose()


def test_a_refusal_is_never_decided_on_a_stale_cached_copy(chat_stack: ChatStack):

    sid = "stale-refusal-0001"
    unreachable = f"redis://127.0.0.1:{free_port()}/0"
    elsewhere = Container(dataclasses.replace(chat_stack.settings, redis_url=unreachable)).sessions
    with chat_stack.client() as client:
        parse_sse(client.post("/chat", json=ui_body(sid, "Apples", "u-1")).text)
        cached = _cached_version(chat_stack.settings.redis_url, sid, working_set_key)
        asyncio.run(_append_exchange(elsewhere, sid, "Pears?", "Pears.", "turn_elsewhere"))
        assert (
            _cached_version(chat_stack.settings.redis_url, sid, working_set_key) == cached
        )  # the cache lacks the new answer
        body = _regenerate_body(sid, [_user("u-1", "Apples"), _user("u-elsewhere", "Pears?")], "turn_elsewhere")
        response = client.post("/chat", json=body)
        assert response.status_code == 200, response.text
        assert parse_sse(response.text).types[-1] == "finish"
        prompt = _last_prompt(chat_stack)
        assert [m["content"] for m in prompt if m["role"] == "user"] == ["Apples", "Pears?"]


@pytest.mark.anyio
async def test_the_user_context_route_shows_what_dynamodb_holds(table_name: str):
    server = RedisServer().start()
    settings = _settings(table_name, server)
    writer, reader = Container(settings), Container(settings)
    try:
        async with _http(reader.sessions, settings) as client:
            first = await client.put("/users/me/context", json={"context": "Works at ACME.", "version": 0})
            assert first.status_code == 200, first.text
            assert (await client.get("/users/me/context")).json()["version"] == 1  # cached by this read
            server.pause()  # one timeout opens the writer's circuit
            try:
                await writer.sessions.get_chat_session("no-such-session-0001", "alice")
            finally:
                server.resume()
            assert not writer.connector.available()
            await writer.user_contexts.put("alice", "Works at Initech.", expected_version=1)  # no write-through
            shown = (await client.get("/users/me/context")).json()
            assert (shown["context"], shown["version"]) == ("Works at Initech.", 2)
            again = await client.put("/users/me/context", json={"context": "Retired.", "version": shown["version"]})
            assert again.status_code == 200, again.text
    finally:
        await writer.sessions.aclose()
        await reader.sessions.aclose()
        server.stop()
