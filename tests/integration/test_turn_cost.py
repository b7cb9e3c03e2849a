"""A turn's cost does not grow with the conversation (issue 11): it reads META and the recent part of the active
path (its working set), never the whole partition — through the real engine, moto and a real Redis, with sessions
written straight into the table by the store's own codecs (``tests.support.long_sessions``). DynamoDB requests and
the items they returned are counted with botocore's ``after-call`` event hooks on the container's client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
import redis.asyncio as aioredis

from chatcore.config import Settings
from chatcore.container import Container
from chatcore.context import build_context
from chatcore.errors import DuplicateClientMessage
from chatcore.models import ChatMessage, ChatSession
from chatcore.tools import ToolRegistry
from tests.support.long_sessions import Tree, write_session
from tests.unit.fakes import ScriptedModel

READS = {"GetItem", "Query", "BatchGetItem", "Scan", "TransactGetItems"}
SUMMARY = "The user and the assistant talked at length about words."


class DynamoCalls:
    """Every request the client makes: (operation, items it returned)."""

    def __init__(self, client: Any) -> None:
        self.calls: list[tuple[str, int]] = []
        client.meta.events.register("after-call.dynamodb", self._after)

    def _after(self, model: Any, parsed: dict[str, Any], **_: Any) -> None:
        items = len(parsed.get("Items", [])) + (1 if "Item" in parsed else 0)
        responses = parsed.get("Responses", {})
        items += sum(len(found) for found in responses.values()) if isinstance(responses, dict) else len(responses)
        self.calls.append((model.name, items))

    def reads(self) -> list[tuple[str, int]]:
        return [call for call in self.calls if call[0] in READS]

    def items_read(self) -> int:
        return sum(items for _, items in self.reads())


@pytest.fixture
async def container(settings: Settings) -> AsyncIterator[Container]:
    model = ScriptedModel(answer=lambda messages: SUMMARY)
    built = Container(settings, llm=model, tools=ToolRegistry())
    yield built
    await built.aclose()


def _model(container: Container) -> ScriptedModel:
    assert isinstance(container.engine.deps.llm, ScriptedModel)
    return container.engine.deps.llm


async def _cold(settings: Settings) -> None:
    client = aioredis.Redis.from_url(settings.redis_url)
    await client.flushall()
    await client.aclose()


async def _send(container: Container, sid: str, text: str, cmid: str) -> list[Any]:
    return [e async for e in container.engine.stream_chat_completion(sid, text, "alice", client_message_id=cmid)]


async def _expected_prompt(container: Container, whole: ChatSession, history: list[ChatMessage]) -> list[Any]:
    """The prompt a turn over the whole active path builds for ``history`` (the new user message last)."""
    view = whole.model_copy(update={"messages": history})

    async def summarise(messages: list[dict[str, Any]]) -> str:
        return SUMMARY

    context = await build_context(
        view,
        container.engine.deps.system_prompt(),
        budget_tokens=container.settings.llm_context_tokens,
        summarise=summarise,
    )
    return context.messages


@pytest.mark.anyio
async def test_a_turn_reads_the_same_for_10_and_10000_messages(container: Container, settings: Settings):
    db = container.aws.dynamodb()
    short, long = Tree(), Tree()
    short.line(0, 10)
    long.line(0, 10_000)
    write_session(db, settings.table_name, "ten-messages", "alice", short)
    # A session grows this long only through turns, which keep a summary of all but the recent messages.
    write_session(db, settings.table_name, "ten-thousand-messages", "alice", long, summary_seq=9_991)
    calls = DynamoCalls(db)
    measured: dict[str, list[tuple[str, int]]] = {}
    for sid in ("ten-messages", "ten-thousand-messages"):
        await _cold(settings)
        calls.calls.clear()
        events = await _send(container, sid, "And what now?", f"new-{sid}")
        assert events[-1].type == "finish" and events[-1].finish_reason == "stop"
        measured[sid] = list(calls.calls)

    # The same requests, returning the same number of items (META and the user's context are read concurrently).
    assert sorted(measured["ten-messages"]) == sorted(measured["ten-thousand-messages"])
    reads = [call for call in measured["ten-thousand-messages"] if call[0] in READS]
    # META, the user's context (none stored), one query of the path back to the summary's message.
    assert sorted(reads) == [("GetItem", 0), ("GetItem", 1), ("Query", 10)]

    # The long session's prompt: the summary, then what follows it; as a turn over the whole path builds it.
    requests = _model(container).requests
    long_prompt = requests[1]["messages"]
    assert SUMMARY not in long_prompt[0]["content"] and "up to message 9991" in long_prompt[0]["content"]
    assert [m["content"] for m in long_prompt[1:3]] == [long.messages[9_991].content, long.messages[9_992].content]
    whole = await container.sessions.load_fresh("ten-thousand-messages")
    assert whole is not None and len(whole.messages) == 10_002
    assert long_prompt == await _expected_prompt(container, whole, whole.messages[:-1])

    # The in-process API still returns the whole active path, after a cache delete too.
    await container.sessions.invalidate_session_cache("ten-thousand-messages")
    again = await container.sessions.get_chat_session("ten-thousand-messages", "alice")
    assert again is not None and not again.partial and len(again.messages) == 10_002
    assert [m.seq for m in again.messages[:3]] == [1, 2, 3]


def _branched(tree: Tree) -> dict[str, int]:
    """A long conversation regenerated and edited far back and near the end; returns named seqs."""
    tree.line(0, 1_200)  # 1..1200
    regenerated = tree.add(599, "assistant", "a second answer to message 599")  # sibling of 600
    tree.line(regenerated, 300)  # 1202..1501, user first
    old_user = 1_300  # a user message on the active path, far from the leaf
    edited = tree.add(old_user - 1, "user", "an edited 1300", client_message_id="c1300", edit_of=old_user)
    after_edit = tree.add(edited, "assistant", "the answer to the edit")
    tip = tree.line(after_edit, 61)  # ends with a user message
    answers = [tree.add(tip, "assistant", f"answer {i} to {tip}", turn_id=f"turn_again_{i}") for i in range(3)]
    return {"regenerated": regenerated, "old_user": old_user, "edited": edited, "tip": tip, "leaf": answers[1]}


@pytest.mark.anyio
@pytest.mark.parametrize("summary", ["on-the-path", "on-another-branch", "none"])
async def test_the_working_set_of_a_branched_session_builds_the_whole_paths_prompt(
    container: Container, settings: Settings, summary: str
):
    tree = Tree()
    seqs = _branched(tree)
    leaf = seqs["leaf"]  # the middle answer of three: newer versions sort after it
    summary_seq = {"on-the-path": seqs["tip"] - 20, "on-another-branch": 1_000, "none": 0}[summary]
    sid = f"branched-{summary}"
    write_session(container.aws.dynamodb(), settings.table_name, sid, "alice", tree, leaf=leaf, summary_seq=summary_seq)
    store = container.sessions.store
    whole = await store.load(sid)
    working = await store.load_working_set(sid)
    assert whole is not None and working is not None and working.partial
    assert working.messages == whole.working_set().messages
    expected_start = summary_seq if summary == "on-the-path" else 1
    assert working.messages[0].seq == expected_start and working.messages[-1].seq == leaf

    await _cold(settings)
    events = await _send(container, sid, "Go on.", "brand-new")
    assert events[-1].finish_reason == "stop"
    history = [*whole.messages, ChatMessage(role="user", content="Go on.")]
    assert _model(container).requests[-1]["messages"] == await _expected_prompt(container, whole, history)


@pytest.fixture
async def long_branched(container: Container, settings: Settings) -> tuple[str, Tree, dict[str, int]]:
    tree = Tree()
    seqs = _branched(tree)
    sid = "long-branched"
    write_session(
        container.aws.dynamodb(),
        settings.table_name,
        sid,
        "alice",
        tree,
        leaf=seqs["leaf"],
        summary_seq=seqs["tip"] - 20,
    )
    await _cold(settings)
    return sid, tree, seqs


@pytest.mark.anyio
async def test_editing_a_message_older_than_the_working_set_branches_from_the_whole_path(
    container: Container, long_branched: tuple[str, Tree, dict[str, int]]
):
    sid, _, _ = long_branched
    whole = await container.sessions.load_fresh(sid)
    assert whole is not None
    old = next(m for m in whole.messages if m.role == "user" and (m.seq or 0) > 500)
    assert old.seq is not None and old.client_message_id is not None
    events = await _send(container, sid, "the same question, asked better", old.client_message_id)
    assert events[-1].finish_reason == "stop"
    after = await container.sessions.load_fresh(sid)
    assert after is not None
    edit = next(m for m in after.messages if m.edit_of == old.seq)
    assert edit.parent_seq == old.parent_seq and edit.content == "the same question, asked better"
    history = [*whole.path_to(old.parent_seq or 0), ChatMessage(role="user", content=edit.content)]
    assert _model(container).requests[-1]["messages"] == await _expected_prompt(container, whole, history)


@pytest.mark.anyio
async def test_resending_a_message_older_than_the_working_set_is_a_duplicate(
    container: Container, long_branched: tuple[str, Tree, dict[str, int]]
):
    sid, _, _ = long_branched
    before = await container.sessions.load_fresh(sid)
    assert before is not None
    old = next(m for m in before.messages if m.role == "user" and (m.seq or 0) > 500)
    assert old.client_message_id is not None and old.content is not None
    with pytest.raises(DuplicateClientMessage):
        await _send(container, sid, old.content, old.client_message_id)
    after = await container.sessions.load_fresh(sid)
    assert after is not None and after.message_count == before.message_count
    assert after.leaf_seq == before.leaf_seq and after.active_turn_id is None


@pytest.mark.anyio
async def test_regenerating_an_old_answer_and_the_last_one(
    container: Container, long_branched: tuple[str, Tree, dict[str, int]]
):
    sid, tree, seqs = long_branched
    whole = await container.sessions.load_fresh(sid)
    assert whole is not None
    engine = container.engine
    # The last answer: decided over the working set alone (the path back to the summary's message).
    calls = DynamoCalls(container.aws.dynamodb())
    working = await container.sessions.load_working_set(sid)
    assert working is not None and len(working.messages) == 22
    calls.calls.clear()
    events = [e async for e in engine.regenerate(sid, "alice")]
    assert events[-1].finish_reason == "stop"
    assert _model(container).requests[-1]["messages"][-1]["content"] == tree.messages[seqs["tip"] - 1].content
    # The working set twice (before; and after the new branch is written, the store reads back what it wrote,
    # its path one message longer): 50 items, not the 1,567 of the partition.
    assert calls.items_read() <= 2 * (len(working.messages) + 4)

    # An answer older than the working set: planned over the whole path.
    old_answer = next(m for m in whole.messages if m.role == "assistant" and 400 < (m.seq or 0) < 700)
    events = [e async for e in engine.regenerate(sid, "alice", message_id=old_answer.turn_id)]
    assert events[-1].finish_reason == "stop"
    history = whole.path_to(old_answer.parent_seq or 0)
    assert _model(container).requests[-1]["messages"] == await _expected_prompt(container, whole, history)


@pytest.mark.anyio
async def test_a_working_set_is_never_cached_or_returned_as_the_whole_session(container: Container, settings: Settings):
    tree = Tree()
    tree.line(0, 300)
    write_session(container.aws.dynamodb(), settings.table_name, "guarded-session", "alice", tree, summary_seq=281)
    sessions = container.sessions
    working = await sessions.working_set("guarded-session")
    assert working is not None and working.partial and working.messages[0].seq == 281
    assert not working.is_complete()
    with pytest.raises(ValueError, match="not the whole session"):
        await sessions.cache.put(working)
    # A turn caches its working set; the whole session is read whole (and cached whole) all the same.
    await _send(container, "guarded-session", "More.", "more-1")
    assert await sessions.cache.get("guarded-session") is None
    whole = await sessions.get_chat_session("guarded-session", "alice")
    assert whole is not None and not whole.partial and len(whole.messages) == 302
    cached = await sessions.cache.get("guarded-session")
    assert cached is not None and len(cached.messages) == 302
    turn_view, _ = await sessions.cache.get_working_set_with_user_context("guarded-session", None)
    assert turn_view is not None and turn_view.partial and turn_view.messages[0].seq == 281
    # Saving a working set reads back a working set (a new branch makes the store read what it wrote).
    branch = ChatMessage(role="user", content="from 290", parent_seq=290)
    turn_view.messages.append(branch)
    saved = await sessions.upsert_chat_session(turn_view)
    assert saved.partial and saved.messages[-1].parent_seq == 290
    assert [m.seq for m in saved.messages][:2] == [281, 282]
    assert await sessions.cache.get("guarded-session") is None  # the whole copy was dropped, not overwritten


@pytest.mark.anyio
async def test_without_redis_a_turn_reads_the_working_set_from_dynamodb(settings: Settings):
    container = Container(replace(settings, redis_url=""), llm=ScriptedModel(), tools=ToolRegistry())
    try:
        tree = Tree()
        tree.line(0, 2_000)
        db = container.aws.dynamodb()
        write_session(db, settings.table_name, "no-redis", "alice", tree, summary_seq=1_991)
        calls = DynamoCalls(db)
        events = await _send(container, "no-redis", "Hi again.", "again-1")
        assert events[-1].finish_reason == "stop"
        assert sorted(calls.reads()) == [("GetItem", 0), ("GetItem", 1), ("Query", 10)]
    finally:
        await container.aclose()


@pytest.mark.anyio
async def test_a_new_summary_starts_the_next_turns_working_set(container: Container, settings: Settings):
    tree = Tree()
    tree.line(0, 200, words=60)  # about 20,000 estimated tokens: over the default budget
    write_session(container.aws.dynamodb(), settings.table_name, "summarised", "alice", tree)
    await _send(container, "summarised", "First.", "first-1")
    model = _model(container)
    assert len(model.completions) == 1  # the summary was made
    # The next (warm) turn reads no history from DynamoDB and does not summarise again: the working set the first
    # turn cached carries the new summary (before, the cached copy kept the old one, and every warm turn summarised).
    stored = await container.sessions.store.load_meta("summarised")
    assert stored is not None and stored.context_summary == SUMMARY
    calls = DynamoCalls(container.aws.dynamodb())
    await _send(container, "summarised", "Second.", "second-1")
    assert len(model.completions) == 1
    assert SUMMARY in model.requests[-1]["messages"][0]["content"]
    # At most the working set from the summary's message (when the summary's write came after the answer's, the
    # cached copy was dropped): never the 200 messages before it.
    assert calls.items_read() <= 1 + 202 - stored.summary_seq + 2
    cached, _ = await container.sessions.cache.get_working_set_with_user_context("summarised", None)
    assert cached is not None and cached.context_summary == SUMMARY
    assert cached.messages[0].seq == stored.summary_seq  # it starts at the summary's message


@pytest.mark.anyio
async def test_a_session_changed_between_the_read_and_the_lease_is_planned_over_what_was_read(
    container: Container, settings: Settings
):
    tree = Tree()
    tree.line(0, 10)
    write_session(container.aws.dynamodb(), settings.table_name, "changed-meanwhile", "alice", tree)
    await _send(container, "changed-meanwhile", "First.", "first-1")  # caches the session
    # A rename the cache has not heard of: the turn reads the cached copy, its lease finds a newer version.
    assert await container.sessions.store.update_fields("changed-meanwhile", {"title": "Renamed"}) is not None
    events = await _send(container, "changed-meanwhile", "Second.", "second-1")
    assert events[-1].finish_reason == "stop"
    stored = await container.sessions.load_fresh("changed-meanwhile")
    assert stored is not None and [m.content for m in stored.messages[-4:-1]] == [
        "First.",
        "(no script)",
        "Second.",
    ]
    assert stored.title == "Renamed"
