"""Filtered session listings cost what their results cost: ``status`` and ``chat_type`` are served by indexes
(``ByUserStatus``, ``ByUserTypeStatus``), newest first, with the same cursor as the unfiltered listing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import boto3
import pytest

from chatcore.config import Settings
from chatcore.container import Container
from chatcore.dynamo.backfill import backfill
from chatcore.dynamo.codecs import encode_meta
from chatcore.models import ChatMessage, ChatSession, utcnow
from chatcore.sessions import SessionService

pytestmark = pytest.mark.anyio


class ReadCounter:
    """The items DynamoDB read for the container's queries, from each response's ``ScannedCount`` (a botocore
    event hook on the container's own client)."""

    def __init__(self, container: Container) -> None:
        self.items = 0
        self.queries = 0
        container.aws.dynamodb().meta.events.register("after-call.dynamodb.Query", self._count)

    def _count(self, parsed: dict[str, Any], **_: Any) -> None:
        self.queries += 1
        self.items += int(parsed.get("ScannedCount", 0))

    def reset(self) -> None:
        self.items = self.queries = 0


@pytest.fixture
async def listing(table_name: str) -> AsyncIterator[tuple[SessionService, ReadCounter]]:
    container = Container(Settings(table_name=table_name))  # no Redis: listings never use it
    yield container.sessions, ReadCounter(container)
    await container.sessions.aclose()


def _seed(table_name: str, count: int) -> None:
    """``count`` sessions of alice, newer than any created so far, written as the store creates them (META as
    ``encode_meta`` builds it) but in batches: setting the scene, not the code under test."""
    client = boto3.client("dynamodb")
    start = utcnow()
    items = [encode_meta(ChatSession.new("alice"), start + timedelta(milliseconds=i), []) for i in range(count)]
    for first in range(0, count, 25):
        requests: Any = [{"PutRequest": {"Item": item}} for item in items[first : first + 25]]
        assert not client.batch_write_item(RequestItems={table_name: requests}).get("UnprocessedItems")


async def _all_pages(service: SessionService, limit: int, **filters: Any) -> list[str]:
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(100):
        page = await service.list_sessions("alice", limit=limit, cursor=cursor, **filters)
        assert len(page.sessions) <= limit
        seen.extend(s.session_id for s in page.sessions)
        cursor = page.next_cursor
        if cursor is None:
            return seen
    raise AssertionError("the listing never ended")


async def test_a_sparse_status_filter_reads_only_what_it_returns(listing: tuple[SessionService, ReadCounter]):
    service, reads = listing
    archived = [await service.create_session("alice") for _ in range(2)]  # the oldest: an unindexed filter would
    for session in archived:  # walk every newer session first
        assert await service.update_session(session.session_id, {"status": "archived"}, user_id="alice")
    _seed(service.store.table_name, 1198)
    reads.reset()
    page = await service.list_sessions("alice", limit=2, status="archived")
    assert sorted(s.session_id for s in page.sessions) == sorted(s.session_id for s in archived)
    assert all(s.status == "archived" for s in page.sessions)
    assert reads.items <= 2 and reads.queries == 1
    reads.reset()
    ids = await _all_pages(service, 1, status="archived")
    assert ids == [archived[1].session_id, archived[0].session_id]  # newest first: archiving did not reorder
    assert reads.items <= 3  # one per page (the last page may find nothing)
    reads.reset()
    active = await service.list_sessions("alice", limit=3, status="active")
    assert len(active.sessions) == 3 and reads.items == 3


async def test_filters_page_newest_first_across_types_and_statuses(listing: tuple[SessionService, ReadCounter]):
    service, reads = listing
    sessions: list[ChatSession] = []
    for index in range(12):  # oldest first; types and statuses interleaved
        chat_type = "agent" if index % 3 == 0 else "chat"
        session = await service.create_session("alice", chat_type=chat_type)
        if index % 4 == 0:
            updated = await service.update_session(session.session_id, {"status": "archived"}, user_id="alice")
            assert updated is not None
            session = updated
        sessions.append(session)
    await service.create_session("bob", chat_type="agent")  # another user's: never listed
    newest = list(reversed(sessions))

    def expected(**filters: str) -> list[str]:
        return [s.session_id for s in newest if all(getattr(s, k) == v for k, v in filters.items())]

    for limit in (1, 2, 5, 50):
        assert await _all_pages(service, limit) == expected()
        assert await _all_pages(service, limit, status="archived") == expected(status="archived")
        assert await _all_pages(service, limit, status="active") == expected(status="active")
        assert await _all_pages(service, limit, chat_type="agent") == expected(chat_type="agent")
        assert await _all_pages(service, limit, chat_type="chat", status="archived") == expected(
            chat_type="chat", status="archived"
        )
        assert await _all_pages(service, limit, chat_type="none") == []
    reads.reset()
    page = await service.list_sessions("alice", limit=2, chat_type="agent")
    assert [s.session_id for s in page.sessions] == expected(chat_type="agent")[:2]
    assert reads.items <= 4  # a type alone reads the newest `limit` of each status and merges them

    # Moving between filters: a status change, an append, a type change, a delete.
    moved = sessions[1]
    assert moved.status == "active" and moved.chat_type == "chat"
    assert await service.update_session(moved.session_id, {"status": "archived"}, user_id="alice")
    loaded = await service.get_chat_session(moved.session_id, "alice")
    assert loaded is not None
    loaded.messages.append(ChatMessage(role="user", content="still archived, now the newest"))
    await service.upsert_chat_session(loaded)
    first = await service.list_sessions("alice", limit=1, status="archived")
    assert [s.session_id for s in first.sessions] == [moved.session_id]
    assert moved.session_id not in await _all_pages(service, 50, status="active")
    assert await service.update_session(moved.session_id, {"chat_type": "agent"}, user_id="alice")
    assert (await service.list_sessions("alice", limit=1, chat_type="agent", status="archived")).sessions[
        0
    ].session_id == moved.session_id
    assert moved.session_id not in await _all_pages(service, 50, chat_type="chat")
    assert await service.delete_session(moved.session_id, "alice")
    for filters in ({}, {"status": "archived"}, {"chat_type": "agent"}, {"chat_type": "agent", "status": "archived"}):
        assert moved.session_id not in await _all_pages(service, 50, **filters)


async def test_sessions_stored_before_the_indexes_join_them(listing: tuple[SessionService, ReadCounter]):
    service, _ = listing
    client = boto3.client("dynamodb")
    old = [await service.create_session("alice", chat_type="agent") for _ in range(3)]
    for session in old:  # as written before the filtered indexes existed
        key = {"PK": {"S": f"SESSION#{session.session_id}"}, "SK": {"S": "META"}}
        client.update_item(TableName=service.store.table_name, Key=key, UpdateExpression="REMOVE GSI2PK, GSI3PK")
    assert await service.delete_session(old[2].session_id, "alice")
    assert await _all_pages(service, 10, chat_type="agent") == []  # not yet in the filtered indexes
    assert await _all_pages(service, 10) == [old[1].session_id, old[0].session_id]  # the listing is unaffected
    appended = await service.get_chat_session(old[0].session_id, "alice")
    assert appended is not None
    appended.messages.append(ChatMessage(role="user", content="an append writes the keys"))
    await service.upsert_chat_session(appended)
    assert await _all_pages(service, 10, status="active") == [old[0].session_id]
    assert await backfill(service.store.table) == 1  # the other one; the deleted one stays out
    assert await _all_pages(service, 10, chat_type="agent", status="active") == [old[0].session_id, old[1].session_id]
    assert await backfill(service.store.table) == 0
