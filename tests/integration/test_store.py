"""The DynamoDB store against moto: conditional writes, paging, races, delete cascade."""

from __future__ import annotations

import asyncio
import os

import boto3
import pytest
from botocore.config import Config

from chatcore.config import Settings
from chatcore.container import Container
from chatcore.dynamo.keys import pk
from chatcore.errors import (
    THROTTLING_CODES,
    Conflict,
    DuplicateClientMessage,
    NotFound,
    ServiceRefused,
    ServiceUnavailable,
)
from chatcore.models import ChatMessage, ChatSession, ToolCall, ToolCallFunction, Usage
from chatcore.store import SessionStore, TurnGuard
from tests.faults.support import DynamoFaults

pytestmark = pytest.mark.anyio


def _items(table_name: str, session_id: str) -> list[dict]:
    client = boto3.client("dynamodb", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    out: list[dict] = []
    kwargs: dict = {
        "TableName": table_name,
        "KeyConditionExpression": "PK = :pk",
        "ExpressionAttributeValues": {":pk": {"S": pk(session_id)}},
    }
    while True:
        page = client.query(**kwargs)
        out += page["Items"]
        if "LastEvaluatedKey" not in page:
            return out
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


@pytest.fixture
def store(table_name: str) -> SessionStore:
    return Container(Settings(table_name=table_name)).store


async def test_create_and_load_round_trip(store: SessionStore):
    session = ChatSession.new("u1", title="hello", metadata={"k": [1, 2]})
    call = ToolCall(id="c1", function=ToolCallFunction(name="calc", arguments='{"e":"1+1"}'))
    session.messages = [
        ChatMessage(role="user", content="hi", client_message_id="m-1"),
        ChatMessage(
            role="assistant", tool_calls=[call], usage=Usage(prompt_tokens=5, completion_tokens=2, total_tokens=7)
        ),
        ChatMessage(role="tool", tool_call_id="c1", content="2"),
    ]
    saved = await store.save(session)
    assert saved.version == 1 and saved.message_count == 3
    assert [m.seq for m in saved.messages] == [1, 2, 3]
    assert saved.usage == [Usage(prompt_tokens=5, completion_tokens=2, total_tokens=7)]
    assert saved.usage_totals == Usage(prompt_tokens=5, completion_tokens=2, total_tokens=7)
    loaded = await store.load(session.session_id)
    assert loaded is not None
    assert loaded.model_dump() == saved.model_dump()


async def test_append_assigns_next_seqs_and_adds_usage(store: SessionStore):
    session = await store.save(ChatSession.new("u1"))
    session.messages.append(ChatMessage(role="user", content="a"))
    session.messages.append(ChatMessage(role="assistant", content="b", usage=Usage(total_tokens=4)))
    saved = await store.save(session)
    assert saved.version == 2 and saved.message_count == 2 and saved.usage_totals.total_tokens == 4
    assert saved.usage == [Usage(total_tokens=4)]
    saved.messages.append(ChatMessage(role="user", content="c"))
    saved = await store.save(saved)
    loaded = await store.load(session.session_id)
    assert loaded is not None
    assert [(m.seq, m.content) for m in loaded.messages] == [(1, "a"), (2, "b"), (3, "c")]
    assert loaded.usage_totals.total_tokens == 4 and loaded.version == 3
    assert loaded.usage == [Usage(total_tokens=4)]


async def test_load_pages_through_many_large_messages(store: SessionStore):
    # ~2.5 MB of messages: several 1 MB query pages, and more than one transaction per save.
    session = ChatSession.new("u1")
    session.messages = [ChatMessage(role="user", content=f"{i:04d}" + "x" * 20_000) for i in range(120)]
    await store.save(session)
    loaded = await store.load(session.session_id)
    assert loaded is not None and loaded.message_count == 120
    assert [m.content[:4] for m in loaded.messages] == [f"{i:04d}" for i in range(120)]


async def test_twenty_concurrent_writers_lose_nothing(store: SessionStore):
    base = await store.save(ChatSession.new("u1"))

    async def writer(n: int) -> str:
        own = await store.load(base.session_id)
        assert own is not None
        text = f"writer-{n}"
        own.messages.append(ChatMessage(role="user", content=text))
        await store.save(own)
        return text

    acknowledged = await asyncio.gather(*(writer(n) for n in range(20)))
    loaded = await store.load(base.session_id)
    assert loaded is not None
    contents = [m.content for m in loaded.messages]
    assert sorted(contents) == sorted(acknowledged)  # every acknowledged message exactly once
    assert [m.seq for m in loaded.messages] == list(range(1, 21))  # dense
    assert loaded.message_count == 20 and loaded.version == 21
    assert len([i for i in _items(store.table_name, base.session_id) if i["SK"]["S"].startswith("MSG#")]) == 20


async def test_stale_writer_does_not_overwrite_concurrent_rename(store: SessionStore):
    session = await store.save(ChatSession.new("u1", title="first"))
    stale = await store.load(session.session_id)
    assert stale is not None
    await store.update_fields(session.session_id, {"title": "renamed"})
    stale.messages.append(ChatMessage(role="user", content="hi"))
    saved = await store.save(stale)
    assert saved.title == "renamed" and saved.message_count == 1


async def test_duplicate_client_message_id_is_rejected_with_its_seq(store: SessionStore):
    session = await store.save(ChatSession.new("u1"))
    session.messages.append(ChatMessage(role="user", content="once", client_message_id="cm-1"))
    session = await store.save(session)
    session.messages.append(ChatMessage(role="user", content="again", client_message_id="cm-1"))
    with pytest.raises(DuplicateClientMessage) as caught:
        await store.save(session)
    assert caught.value.seq == 1
    loaded = await store.load(session.session_id)
    assert loaded is not None and [m.content for m in loaded.messages] == ["once"]


async def test_create_with_existing_id_conflicts(store: SessionStore):
    session = await store.save(ChatSession.new("u1"))
    with pytest.raises(Conflict):
        await store.save(ChatSession.new("u2", session_id=session.session_id))
    loaded = await store.load(session.session_id)
    assert loaded is not None and loaded.user_id == "u1"


async def test_delete_removes_every_item_and_later_writes_fail(store: SessionStore):
    session = ChatSession.new("u1")
    session.messages = [ChatMessage(role="user", content=str(i), client_message_id=f"c{i}") for i in range(30)]
    session = await store.save(session)
    assert await store.delete(session.session_id, owner="u1") is True
    items = _items(store.table_name, session.session_id)
    assert [i["SK"]["S"] for i in items] == ["META"]  # only the tombstone
    assert "title" not in items[0] and "GSI1PK" not in items[0]
    assert await store.load(session.session_id) is None
    assert await store.load_meta(session.session_id) is None
    # A writer that still holds the session cannot resurrect it.
    session.messages.append(ChatMessage(role="user", content="late"))
    with pytest.raises(NotFound):
        await store.save(session)
    with pytest.raises(Conflict):
        await store.save(ChatSession.new("u1", session_id=session.session_id))
    assert [i["SK"]["S"] for i in _items(store.table_name, session.session_id)] == ["META"]
    assert await store.update_fields(session.session_id, {"title": "x"}) is None
    assert await store.delete(session.session_id, owner="u1") is False


async def test_delete_checks_owner(store: SessionStore):
    session = await store.save(ChatSession.new("u1"))
    assert await store.delete(session.session_id, owner="u2") is False
    assert await store.load(session.session_id) is not None


async def test_list_for_user_newest_first_with_filters_and_cursor(store: SessionStore):
    created = []
    for i in range(7):
        s = ChatSession.new("u1", title=f"s{i}", chat_type="agent" if i % 2 else "chat")
        created.append(await store.save(s))
    await store.save(ChatSession.new("someone-else"))
    archived = await store.update_fields(created[0].session_id, {"status": "archived"})
    assert archived is not None

    page, cursor = await store.list_for_user("u1", limit=3)
    assert [s.title for s in page] == ["s6", "s5", "s4"] and cursor is not None
    page2, cursor2 = await store.list_for_user("u1", limit=3, start_after=cursor)
    assert [s.title for s in page2] == ["s3", "s2", "s1"]
    page3, cursor3 = await store.list_for_user("u1", limit=3, start_after=cursor2)
    assert [s.title for s in page3] == ["s0"] and cursor3 is None

    agents, _ = await store.list_for_user("u1", limit=10, chat_type="agent")
    assert [s.title for s in agents] == ["s5", "s3", "s1"]
    active_chats, _ = await store.list_for_user("u1", limit=2, status="active", chat_type="chat")
    assert [s.title for s in active_chats] == ["s6", "s4"]


async def test_assign_owner_claims_anonymous_only(store: SessionStore):
    anonymous = await store.save(ChatSession.new(None))
    claimed = await store.assign_owner(anonymous.session_id, "u1")
    assert claimed is not None and claimed.user_id == "u1"
    assert await store.assign_owner(anonymous.session_id, "u2") is None
    again = await store.assign_owner(anonymous.session_id, "u1")
    assert again is not None and again.user_id == "u1"
    page, _ = await store.list_for_user("u1", limit=5)
    assert [s.session_id for s in page] == [anonymous.session_id]


async def test_backend_errors_are_translated(monkeypatch: pytest.MonkeyPatch):
    store = Container(Settings(table_name="no-such-table")).store
    with pytest.raises(ServiceUnavailable):
        await store.load("abcdefgh1234")
    with pytest.raises(ServiceUnavailable):
        await store.save(ChatSession.new("u1"))


def _store_without_botocore_retries(table_name: str) -> tuple[SessionStore, DynamoFaults]:
    """A store whose client makes one attempt per call (botocore's retries off), with faults injected into it: what
    reaches the store is what botocore would raise after its own retries gave up."""
    client = boto3.client(
        "dynamodb", endpoint_url=os.environ["AWS_ENDPOINT_URL"], config=Config(retries={"total_max_attempts": 1})
    )
    return SessionStore(table_name, client_factory=lambda: client), DynamoFaults(client)


async def _leased(store: SessionStore, turn_id: str) -> ChatSession:
    session = ChatSession.new("u1")
    session.messages = [ChatMessage(role="user", content="hi")]
    await store.save(session)
    held = await store.acquire_turn(session.session_id, turn_id, owner="u1", lease_seconds=30)
    held.messages = list(session.messages)
    held.messages.append(ChatMessage(role="assistant", content="the streamed answer", turn_id=turn_id))
    return held


@pytest.mark.parametrize("code", sorted(THROTTLING_CODES))
async def test_a_throttled_transaction_is_sent_again_within_the_guards_budget(table_name: str, code: str):
    store, faults = _store_without_botocore_retries(table_name)
    session = await _leased(store, "turn_t")
    with faults.installed():
        faults.fail("TransactWriteItems", code, times=3)
        saved = await store.save(session, turn=TurnGuard("turn_t", release=True, throttle_seconds=10.0))
        assert faults.injected["TransactWriteItems"] == 3 and faults.sent["TransactWriteItems"] == 4
    assert [m.content for m in saved.messages] == ["hi", "the streamed answer"] and saved.active_turn_id is None
    stored = await store.load(session.session_id)
    assert stored is not None and [(m.seq, m.content) for m in stored.messages] == [
        (1, "hi"),
        (2, "the streamed answer"),
    ]


async def test_a_throttled_transaction_past_the_budget_or_without_one_is_raised_and_applies_nothing(table_name: str):
    store, faults = _store_without_botocore_retries(table_name)
    for budget in (0.0, 0.4):
        session = await _leased(store, f"turn_{budget}")
        with faults.installed():
            faults.fail("TransactWriteItems", "ThrottlingException", times=1_000)
            with pytest.raises(ServiceRefused) as refused:
                await store.save(session, turn=TurnGuard(f"turn_{budget}", release=True, throttle_seconds=budget))
            sent = faults.sent["TransactWriteItems"]
            faults.clear()
        assert refused.value.throttled and (sent == 1 if budget == 0 else 2 <= sent <= 5), (budget, sent)
        stored = await store.load(session.session_id)
        assert stored is not None and [m.content for m in stored.messages] == ["hi"]
        assert stored.active_turn_id == f"turn_{budget}"  # still held: the turn's own release decides
