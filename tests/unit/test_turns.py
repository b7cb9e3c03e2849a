"""The chat turn engine against in-memory fakes of its ports (no moto, no Redis, no HTTP): what it streams, what
it stores, and that the lease is always given back."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from chatcore.config import Settings
from chatcore.errors import TurnInProgress
from chatcore.llm import LLMError, TextDelta
from chatcore.models import ChatMessage
from chatcore.stream import StreamEvent
from chatcore.turn_types import TurnHandle
from chatcore.turns import ERROR_TEXT
from tests.unit.conftest import Parts
from tests.unit.conftest import stored as _stored
from tests.unit.fakes import HANG, text, tool_call

pytestmark = pytest.mark.anyio


async def _turn(parts: Parts, message: str = "Hello") -> list[StreamEvent]:
    return [e async for e in parts.engine.stream_chat_completion(parts.session_id, message, "alice")]


async def _live(parts: Parts, message: str) -> TurnHandle:
    started = await parts.engine.start_turn(parts.session_id, message, user_id="alice")
    assert isinstance(started, TurnHandle)
    return started


def _types(events: list[StreamEvent]) -> list[str]:
    return [e.chunk()["type"] for e in events]


async def test_plain_turn_streams_stores_and_releases(parts: Parts):
    parts.model.scripts = [text("Hi ", "there")]
    events = await _turn(parts)
    types = _types(events)
    assert types[:3] == ["start", "start-step", "text-start"]
    assert types[-3:] == ["text-end", "finish-step", "finish"] or types[-2:] == ["finish-step", "finish"]
    assert "".join(e.chunk().get("delta", "") for e in events) == "Hi there"
    stored = _stored(parts)
    assert [(m.role, m.content, m.status) for m in stored.messages] == [
        ("user", "Hello", "complete"),
        ("assistant", "Hi there", "complete"),
    ]
    assert stored.messages[1].usage is not None and stored.messages[1].usage.total_tokens == 8
    assert stored.active_turn_id is None  # released with the answer's write
    # The LLM saw the system prompt and the user message; every write was guarded by the turn's lease.
    assert parts.model.requests[0]["messages"][0] == {"role": "system", "content": "You are a test."}
    assert parts.model.requests[0]["messages"][-1] == {"role": "user", "content": "Hello"}
    assert all(guard is not None for _, guard in parts.sessions.writes)
    # The replay log holds the same chunks in order, then its end.
    turn_id = events[0].chunk()["messageId"]
    log = parts.replay.logs[turn_id]
    assert log[-1] is None and [json.loads(c)["type"] for c in log[:-1] if c] == types


async def test_tool_round_then_answer(parts: Parts):
    parts.model.scripts = [tool_call("call_1", "add", '{"a": 2, "b": 3}'), text("It is 5.")]
    events = await _turn(parts, "What is 2+3?")
    types = _types(events)
    assert "tool-input-available" in types and "tool-output-available" in types
    output = next(e.chunk() for e in events if e.chunk()["type"] == "tool-output-available")
    assert output["toolCallId"] == "call_1" and output["output"] == {"sum": 5}
    roles = [(m.role, m.status) for m in _stored(parts).messages]
    assert roles == [("user", "complete"), ("assistant", "complete"), ("tool", "complete"), ("assistant", "complete")]
    assert _stored(parts).messages[3].content == "It is 5."
    # The second model call carries the call and its result, right after each other.
    second = parts.model.requests[1]["messages"]
    assert second[-2]["tool_calls"][0]["id"] == "call_1"
    assert second[-1] == {"role": "tool", "tool_call_id": "call_1", "content": json.dumps({"sum": 5})}
    assert _stored(parts).active_turn_id is None


async def test_tool_rounds_are_bounded(parts: Parts):
    parts.model.scripts = [tool_call(f"call_{i}", "add", '{"a": 1, "b": 1}') for i in range(2)] + [text("done")]
    await _turn(parts)
    # max_tool_rounds=2: the last allowed round asks the model to answer without tools.
    assert parts.model.requests[2]["tool_choice"] == "none"
    assert _stored(parts).active_turn_id is None


async def test_failure_before_output_keeps_the_user_message_only(parts: Parts):
    parts.model.scripts = [[LLMError("the language model failed")]]
    events = await _turn(parts)
    types = _types(events)
    assert types[-1] == "finish" and "error" in types
    error = next(e.chunk() for e in events if e.chunk()["type"] == "error")
    assert error["errorText"] == ERROR_TEXT  # no internals leak
    assert [m.role for m in _stored(parts).messages] == ["user"]
    assert _stored(parts).active_turn_id is None


async def test_failure_after_output_keeps_the_partial_answer(parts: Parts):
    parts.model.scripts = [[TextDelta("Half an"), TextDelta(" answer"), LLMError("connection reset")]]
    events = await _turn(parts)
    assert "error" in _types(events)
    answer = _stored(parts).messages[-1]
    assert (answer.role, answer.content, answer.status) == ("assistant", "Half an answer", "partial")
    assert _stored(parts).active_turn_id is None


async def test_stop_keeps_the_partial_answer_without_an_error(parts: Parts):
    parts.model.scripts = [[TextDelta("Some words"), HANG]]
    started = await _live(parts, "Talk")
    queue = started.channel.listen()
    seen: list[str] = []
    while (item := await queue.get()) is not None:
        seen.append(item.event.chunk()["type"])
        if seen[-1] == "text-delta":
            stopping = await parts.engine.stop(parts.session_id, "alice")
            assert stopping is not None and stopping.turn_id == started.turn_id
    assert started.task is not None
    await started.task
    assert "error" not in seen and seen[-1] == "finish"
    answer = _stored(parts).messages[-1]
    assert (answer.content, answer.status) == ("Some words", "partial")
    assert parts.model.closed_streams == 1  # the silent model's request was closed, not left hanging
    assert _stored(parts).active_turn_id is None


async def test_stop_is_404_for_another_caller_and_none_when_idle(parts: Parts):
    from chatcore.errors import NotFound

    with pytest.raises(NotFound):
        await parts.engine.stop(parts.session_id, "mallory")
    with pytest.raises(NotFound):
        await parts.engine.stop(parts.session_id, None)  # anonymous reaches owner-less sessions only
    assert await parts.engine.stop(parts.session_id, "alice") is None


async def test_first_message_gets_a_title(parts: Parts):
    parts.model.scripts = [text("Sure.")]
    parts.model.answer = lambda messages: '"Trip To Lisbon"'
    events = await _turn(parts, "Plan a trip to Lisbon")
    titles = [e.chunk() for e in events if e.chunk()["type"] == "data-title"]
    assert titles and titles[0]["data"] == {"title": "Trip To Lisbon"}
    assert _stored(parts).title == "Trip To Lisbon"
    # Only the first message of an untitled session asks for one.
    parts.model.scripts = [text("Again.")]
    before = len(parts.model.completions)
    await _turn(parts, "And then?")
    assert len(parts.model.completions) == before


@pytest.mark.parametrize("title_arrives", ["before the answer is stored", "after the answer is stored"])
async def test_a_generated_title_never_replaces_a_rename_made_during_the_turn(parts: Parts, title_arrives: str):
    """Issue 12 item 5: a rename is the user's word; the title generated from the first message came later and
    replaced it."""
    renamed = asyncio.Event()

    def answer(messages: list[dict[str, Any]]) -> str:
        return "Generated Title"

    async def slow_title(messages: list[dict[str, Any]], **_: Any) -> tuple[str, None]:
        if title_arrives == "after the answer is stored":
            await asyncio.sleep(0.3)  # the answer's write has happened; the late path saves it alone
        return answer(messages), None

    parts.model.complete = slow_title  # type: ignore[method-assign]
    parts.model.scripts = [[TextDelta("Sure"), renamed, *text(".")]]
    started = await _live(parts, "Plan a trip")
    await parts.sessions.update_session_title(parts.session_id, "My own name", "alice")  # the user renames
    renamed.set()
    assert started.task is not None
    await started.task
    assert _stored(parts).title == "My own name"


async def test_a_failing_title_never_fails_the_turn(parts: Parts):
    parts.model.scripts = [text("Fine.")]
    parts.model.answer = lambda messages: LLMError("title model down")
    events = await _turn(parts)
    assert "error" not in _types(events) and "data-title" not in _types(events)
    assert _stored(parts).title == "" and _stored(parts).messages[-1].content == "Fine."


async def test_long_history_is_summarised_once_and_the_summary_stored(parts: Parts):
    stored = _stored(parts)
    words = " ".join(["word"] * 400)
    for index in range(40):
        stored.messages.append(ChatMessage(role="user" if index % 2 == 0 else "assistant", content=words))
    parts.sessions.add(stored)
    stored = _stored(parts)
    stored.title = "long"
    parts.engine.deps.settings = Settings(llm_context_tokens=4_000, title_timeout_seconds=1.0)
    parts.model.answer = lambda messages: "The user kept saying word."
    parts.model.scripts = [text("ok")]
    await _turn(parts, "Summarise please")
    assert len(parts.model.completions) == 1  # one summary call
    assert "The user kept saying word." in parts.model.requests[0]["messages"][0]["content"]
    assert _stored(parts).context_summary == "The user kept saying word."
    assert 0 < _stored(parts).summary_seq < 41


async def test_the_client_going_away_does_not_stop_the_turn(parts: Parts):
    parts.model.scripts = [text(*["word "] * 20)]
    started = await _live(parts, "Go")
    queue = started.channel.listen()
    await queue.get()  # read one event, then "disconnect": nobody reads the rest
    assert started.task is not None
    await asyncio.wait_for(started.task, timeout=5)
    assert _stored(parts).messages[-1].content == "word " * 20


async def test_a_stream_that_ends_without_a_finish_reason_is_partial_with_an_error(parts: Parts):
    """Issue 12 item 8: a clean end of the connection (or [DONE] alone) is not a finished answer."""
    from chatcore.llm import Finished

    parts.model.scripts = [[TextDelta("Cut off mid"), Finished(None, None)]]
    events = await _turn(parts)
    assert "error" in _types(events) and _types(events)[-1] == "finish"
    answer = _stored(parts).messages[-1]
    assert (answer.content, answer.status) == ("Cut off mid", "partial")
    assert _stored(parts).active_turn_id is None


async def test_the_users_context_is_in_the_system_prompt_read_with_the_session(parts: Parts):
    parts.contexts.texts = {"alice": "Works at ACME.\nPrefers metric units.", "bob": "Bob's own notes."}
    parts.model.scripts = [text("Noted.")]
    await _turn(parts)
    system = parts.model.requests[0]["messages"][0]
    assert system == {
        "role": "system",
        "content": "You are a test.\n\nWhat you know about the user:\nWorks at ACME.\nPrefers metric units.",
    }
    # One read gave the session and the caller's context (the production adapter: one cache round trip).
    assert parts.contexts.reads == [("session+context", parts.session_id, "alice")]


async def test_a_continuation_gets_the_owners_context(parts: Parts):
    parts.contexts.texts = {"alice": "Prefers short answers."}
    stored = _stored(parts)
    stored.messages.append(ChatMessage(role="user", content="Summarise it in the background", seq=1))
    stored.message_count = 1
    parts.model.scripts = [text("Here is the summary.")]
    handle = await parts.engine.continue_session(parts.session_id, "alice", depth=1)
    assert handle.task is not None
    await asyncio.wait_for(handle.task, timeout=5)
    assert parts.model.requests[0]["messages"][0]["content"].endswith(
        "What you know about the user:\nPrefers short answers."
    )
    assert _stored(parts).messages[-1].content == "Here is the summary."


async def test_the_model_request_goes_out_while_the_lease_is_written(parts: Parts):
    seen: list[int] = []
    parts.sessions.on_take.append(lambda: seen.append(len(parts.model.requests)))
    parts.model.scripts = [text("Hi.")]
    await _turn(parts)
    assert seen == [1]  # the request was already sent when the lease write completed


async def test_the_model_request_goes_out_before_the_lease_write_starts(parts: Parts):
    """The lease write's botocore thread would compete with the request's preparation: the request goes first."""
    seen: list[int] = []
    parts.sessions.on_take_sent.append(lambda: seen.append(len(parts.model.requests)))
    parts.model.scripts = [text("Hi.")]
    await _turn(parts)
    assert seen == [1]


async def test_a_history_being_summarised_does_not_hold_the_lease_write_back(parts: Parts):
    """The model request waits for the summary; the lease write waits for neither (beyond the head start)."""
    stored = _stored(parts)
    for index in range(40):
        stored.messages.append(ChatMessage(role="user" if index % 2 == 0 else "assistant", content="word " * 400))
    parts.sessions.add(stored)
    _stored(parts).title = "long"
    parts.engine.deps.settings = Settings(llm_context_tokens=4_000, title_timeout_seconds=1.0)
    parts.model.answer = lambda messages: "The user kept saying word."
    parts.model.complete_delay = 0.3
    seen: list[int] = []
    parts.sessions.on_take_sent.append(lambda: seen.append(len(parts.model.requests)))
    parts.model.scripts = [text("ok")]
    await _turn(parts, "Summarise please")
    assert seen == [0] and len(parts.model.requests) == 1
    assert _stored(parts).messages[-1].content == "ok"


async def test_a_refused_lease_cancels_the_model_request_before_anything_streams(parts: Parts):
    _stored(parts).active_turn_id = "turn_someone_else"
    parts.model.scripts = [[HANG]]
    with pytest.raises(TurnInProgress):
        await parts.engine.start_turn(parts.session_id, "Hello", user_id="alice")
    assert len(parts.model.requests) == 1 and parts.model.closed_streams == 1  # sent, then closed
    assert parts.replay.logs == {} and _stored(parts).messages == []  # nothing streamed, nothing stored
    assert _stored(parts).active_turn_id == "turn_someone_else"  # the other turn's lease is untouched
