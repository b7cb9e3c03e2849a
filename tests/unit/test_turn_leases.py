"""The turn lease while a turn runs (renewed, lost), a dead turn closed by a stop or a resume, and a stop that takes
effect in every phase of a turn (issue 12 items 1 and 2), against the in-memory fakes of the engine's ports."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

import pytest

from chatcore.dynamo.codecs import with_messages
from chatcore.llm import LLM, TextDelta
from chatcore.models import ChatMessage, Usage
from chatcore.stream import (
    StreamStart,
    StreamStartStep,
    StreamTextDelta,
    StreamTextStart,
    StreamToolInputStart,
    encode_json,
)
from chatcore.tools import ToolContext
from chatcore.turn_types import TurnHandle
from chatcore.turns import ChatEngine
from local.offline_llm import OfflineLLM
from tests.unit.conftest import AddArgs, Parts, stored
from tests.unit.fakes import HANG, ScriptedModel, text, tool_call

pytestmark = pytest.mark.anyio

BOUND = 5.0  # generous: a stop that waited for the model (tens of seconds) fails it


def _with(parts: Parts, **changes: Any) -> ChatEngine:
    """Another engine over the same fakes (another process of the same deployment), with other settings."""
    deps = dataclasses.replace(parts.engine.deps, settings=dataclasses.replace(parts.engine.deps.settings, **changes))
    return ChatEngine(deps)


async def _live(engine: ChatEngine, parts: Parts, message: str) -> TurnHandle:
    started = await engine.start_turn(parts.session_id, message, user_id="alice")
    assert isinstance(started, TurnHandle)
    return started


async def _events(handle: TurnHandle) -> list[dict[str, Any]]:
    queue = handle.channel.listen()
    seen: list[dict[str, Any]] = []
    while (item := await queue.get()) is not None:
        seen.append(item.event.chunk())
    return seen


# -- the lease while the turn runs ------------------------------------------------------------------------------


async def test_a_running_turn_renews_its_lease_and_stops_renewing_once_it_gave_it_back(parts: Parts):
    engine = _with(parts, turn_lease_seconds=2, turn_lease_renew_seconds=0.05)
    go_on = asyncio.Event()
    parts.model.scripts = [[TextDelta("slow"), go_on, *text(" answer")]]
    handle = await _live(engine, parts, "Hello")
    await asyncio.sleep(0.3)
    assert parts.sessions.renewals.count(handle.turn_id) >= 3
    go_on.set()
    assert handle.task is not None
    await handle.task
    renewed = len(parts.sessions.renewals)
    await asyncio.sleep(0.2)
    assert len(parts.sessions.renewals) == renewed  # the keeper ended with the turn
    assert handle.keeper is not None and handle.keeper.done()
    assert stored(parts).active_turn_id is None and stored(parts).messages[-1].content == "slow answer"


async def test_a_turn_that_lost_its_lease_stops_and_writes_nothing_more(parts: Parts):
    engine = _with(parts, turn_lease_seconds=2, turn_lease_renew_seconds=0.05)
    parts.model.scripts = [[TextDelta("Some words"), HANG]]
    handle = await _live(engine, parts, "Hello")
    await asyncio.sleep(0.1)
    writes = len(parts.sessions.writes)
    stored(parts).active_turn_id = "turn_closer"  # its lease lapsed and another took it (a stop or a resume did)
    events = await asyncio.wait_for(_events(handle), BOUND)
    assert events[-1]["type"] == "finish" and any(e["type"] == "error" for e in events)
    assert len(parts.sessions.writes) == writes  # the partial answer's write was refused: the lease is not its own
    assert parts.model.closed_streams == 1
    assert stored(parts).active_turn_id == "turn_closer"


async def test_a_lapsed_lease_no_longer_blocks_a_new_turn(parts: Parts):
    engine = _with(parts, turn_lease_seconds=2, turn_lease_renew_seconds=1.0)
    session = stored(parts)
    session.active_turn_id = "turn_dead"
    parts.sessions.expires[parts.session_id] = parts.sessions.now() - 1  # nothing renewed it
    parts.model.scripts = [text("Fine")]
    handle = await _live(engine, parts, "Again")
    assert handle.task is not None
    await handle.task
    assert stored(parts).messages[-1].content == "Fine" and stored(parts).active_turn_id is None


# -- a dead turn (its process was killed mid-stream) ---------------------------------------------------------


def _dead_turn(parts: Parts, words: str, *, lapsed: bool = True) -> str:
    """What a turn killed mid-stream leaves: its user message stored, its lease held (not renewed any more), its
    replay log without an end, the session's pointer to it."""
    turn_id = "turn_dead"
    session = stored(parts)
    user = ChatMessage(role="user", content="Talk", client_message_id="m1", turn_id=turn_id, seq=1, parent_seq=0)
    parts.sessions.trees[parts.session_id] = [user]
    session.message_count = session.leaf_seq = 1
    with_messages(session, [user.model_copy()])
    session.active_turn_id = turn_id
    parts.sessions.expires[parts.session_id] = parts.sessions.now() + (-1 if lapsed else 30)
    events = [
        StreamStart(message_id=turn_id),
        StreamStartStep(),
        StreamTextStart(id="text_1"),
        *(StreamTextDelta(id="text_1", delta=w) for w in words.split(" ")),
    ]
    parts.replay.logs[turn_id] = [encode_json(e.chunk()) for e in events]
    parts.replay.active[parts.session_id] = turn_id
    return turn_id


async def test_a_stop_of_a_dead_turn_closes_it(parts: Parts):
    turn_id = _dead_turn(parts, "one two three")
    stopping = await parts.engine.stop(parts.session_id, "alice")
    assert stopping is not None and stopping.closed and stopping.turn_id == turn_id
    answer = stored(parts).messages[-1]
    assert (answer.role, answer.content, answer.status, answer.turn_id) == (
        "assistant",
        "onetwothree",
        "interrupted",
        turn_id,
    )
    assert stored(parts).active_turn_id is None
    log = parts.replay.logs[turn_id]
    closing = [json.loads(c)["type"] for c in log[-4:-1] if c is not None]
    assert closing == ["text-end", "finish-step", "finish"] and log[-1] is None  # a stop: no error chunk
    assert parts.replay.active.get(parts.session_id) is None
    assert await parts.engine.stop(parts.session_id, "alice") is None  # nothing runs any more


async def test_a_resume_of_a_dead_turn_closes_it_once(parts: Parts):
    turn_id = _dead_turn(parts, "half")
    closed = await asyncio.gather(*(parts.engine.close_lapsed(parts.session_id, turn_id, stopped=False) for _ in "ab"))
    assert sorted(closed) == [False, True]  # two resumes at once: one closes it
    log = parts.replay.logs[turn_id]
    assert [json.loads(c)["type"] for c in log[-3:-1] if c is not None] == ["error", "finish"]
    assert log.count(None) == 1
    assert [m.status for m in stored(parts).messages] == ["complete", "interrupted"]


async def test_a_live_turn_is_never_closed_as_dead(parts: Parts):
    turn_id = _dead_turn(parts, "still going", lapsed=False)
    assert not await parts.engine.close_lapsed(parts.session_id, turn_id, stopped=False)
    stopping = await parts.engine.stop(parts.session_id, "alice")  # in another process: its flag is set
    assert stopping is not None and not stopping.closed and turn_id in parts.replay.cancels
    assert parts.replay.logs[turn_id][-1] is not None and len(stored(parts).messages) == 1


async def test_a_dead_turn_cut_in_a_tool_call_gets_the_calls_output_closed(parts: Parts):
    turn_id = _dead_turn(parts, "")
    parts.replay.logs[turn_id].append(encode_json(StreamToolInputStart(tool_call_id="c1", tool_name="add").chunk()))
    assert await parts.engine.close_lapsed(parts.session_id, turn_id, stopped=False)
    types = [json.loads(c)["type"] for c in parts.replay.logs[turn_id][-6:-1] if c is not None]
    assert types == ["text-end", "tool-output-error", "finish-step", "error", "finish"]
    assert [m.role for m in stored(parts).messages] == ["user"]  # no text: nothing to store


# -- a stop takes effect in every phase ------------------------------------------------------------------------


async def test_a_stop_from_another_process_before_the_first_token_closes_the_model_request(parts: Parts):
    parts.model.scripts = [[HANG]]  # a silent model
    handle = await _live(parts.engine, parts, "Talk")
    elsewhere = _with(parts)  # the stop lands in another function instance: only the cancel flag reaches the turn
    stopping = await elsewhere.stop(parts.session_id, "alice")
    assert stopping is not None and stopping.turn_id == handle.turn_id and not stopping.closed
    events = await asyncio.wait_for(_events(handle), BOUND)
    assert "finish-step" in [e["type"] for e in events] and events[-1]["type"] == "finish"
    assert not any(e["type"] == "error" for e in events)
    assert parts.model.closed_streams == 1
    assert [m.role for m in stored(parts).messages] == ["user"] and stored(parts).active_turn_id is None


async def test_a_stop_during_a_tool_round_cancels_the_tool(parts: Parts):
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def slow_add(args: AddArgs, ctx: ToolContext) -> dict[str, Any]:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return {}

    parts.engine.deps.tools.tool("Add slowly.", name="slow_add")(slow_add)
    parts.model.scripts = [tool_call("call_1", "slow_add", '{"a": 1, "b": 2}'), text("never asked")]
    handle = await _live(parts.engine, parts, "Add")
    await asyncio.wait_for(started.wait(), BOUND)
    await parts.engine.stop(parts.session_id, "alice")
    events = await asyncio.wait_for(_events(handle), BOUND)
    assert cancelled.is_set()
    assert next(e for e in events if e["type"] == "tool-output-error")["toolCallId"] == "call_1"
    assert events[-1] == {"type": "finish", "finishReason": "stop"}
    assert len(parts.model.requests) == 1  # no model request after the stop
    roles = [(m.role, m.status) for m in stored(parts).messages]
    assert roles == [("user", "complete"), ("assistant", "complete"), ("tool", "error")]  # the call has an output
    assert stored(parts).active_turn_id is None


async def test_a_stop_during_a_retrys_backoff_ends_the_turn(parts: Parts):
    with OfflineLLM() as server:
        settings = dataclasses.replace(
            parts.engine.deps.settings, llm_base_url=server.base_url, llm_api_key="offline", llm_model="offline-chat"
        )
        llm = LLM(settings)
        llm.backoff = lambda attempt: 120.0  # the retry waits two minutes
        engine = ChatEngine(dataclasses.replace(parts.engine.deps, settings=settings, llm=llm))
        stored(parts).title = "Named"  # no title request: the queued fault is the turn's
        server.faults.push("500")
        handle = await _live(engine, parts, "Talk")
        for _ in range(500):  # the 500 came back: the client sleeps in its backoff
            await asyncio.sleep(0.01)
            if _streamed(server):
                break
        await asyncio.sleep(0.1)
        await engine.stop(parts.session_id, "alice")
        events = await asyncio.wait_for(_events(handle), BOUND)
        await llm.aclose()
    assert events[-1]["type"] == "finish" and not any(e["type"] == "error" for e in events)
    assert len(_streamed(server)) == 1  # the retry was never made
    assert stored(parts).active_turn_id is None


def _streamed(server: OfflineLLM) -> list[dict[str, Any]]:
    return [r for r in server.requests if r.get("stream")]


async def test_a_stop_that_cannot_reach_another_instances_turn_is_a_503(parts: Parts):
    from chatcore.errors import ServiceUnavailable

    class NoRedis(type(parts.replay)):  # type: ignore[misc]
        async def active_turn(self, session_id: str) -> str | None:
            return None

        async def request_cancel(self, turn_id: str) -> bool:
            return False

    turn_id = _dead_turn(parts, "still going", lapsed=False)  # alive, in another instance
    elsewhere = ChatEngine(dataclasses.replace(parts.engine.deps, replay=NoRedis()))
    with pytest.raises(ServiceUnavailable):
        await elsewhere.stop(parts.session_id, "alice")
    assert stored(parts).active_turn_id == turn_id


async def test_a_dead_turn_whose_lease_another_turn_took_gets_its_log_ended(parts: Parts):
    turn_id = _dead_turn(parts, "lost words")
    stored(parts).active_turn_id = "turn_next"  # a new turn took the lapsed lease before anything closed the dead one
    parts.sessions.expires[parts.session_id] = parts.sessions.now() + 30
    assert not await parts.engine.close_lapsed(parts.session_id, turn_id, stopped=False)
    assert not await parts.engine.close_abandoned(parts.session_id, "turn_next")  # the holder runs: never closed
    assert await parts.engine.close_abandoned(parts.session_id, turn_id)
    log = parts.replay.logs[turn_id]
    assert [json.loads(c)["type"] for c in log[-4:-1] if c is not None][-2:] == ["error", "finish"] and log[-1] is None
    assert not await parts.engine.close_abandoned(parts.session_id, turn_id)  # ended already
    assert [m.role for m in stored(parts).messages] == ["user"]  # nothing stored: the lease was not its own


async def test_a_turn_running_here_is_never_closed_as_abandoned(parts: Parts):
    parts.model.scripts = [[TextDelta("busy"), HANG]]
    handle = await _live(parts.engine, parts, "Talk")
    stored(parts).active_turn_id = None  # whatever the table says: this process runs it
    assert not await parts.engine.close_abandoned(parts.session_id, handle.turn_id)
    handle.cancel.set()
    assert handle.task is not None
    await handle.task


async def test_a_stop_while_a_long_history_is_summarised_makes_no_model_request(parts: Parts):
    asked = asyncio.Event()

    class SlowSummaries(ScriptedModel):
        async def complete(
            self, messages: list[dict[str, Any]], *, model: str | None = None, max_tokens: int = 256
        ) -> tuple[str, Usage | None]:
            self.completions.append(messages)
            asked.set()
            await asyncio.Event().wait()  # the summary never comes
            raise AssertionError("unreachable")

    session = stored(parts)
    session.messages = [
        ChatMessage(role="user" if i % 2 == 0 else "assistant", content="word " * 400) for i in range(40)
    ]
    parts.sessions.add(session)
    stored(parts).title = "long"
    model = SlowSummaries()
    settings = dataclasses.replace(parts.engine.deps.settings, llm_context_tokens=4_000)
    engine = ChatEngine(dataclasses.replace(parts.engine.deps, llm=model, settings=settings))
    submitted = asyncio.create_task(engine.start_turn(parts.session_id, "And now?", user_id="alice"))
    await asyncio.wait_for(asked.wait(), BOUND)  # asked before the lease is taken: wait for the turn to be registered
    for _ in range(500):
        if parts.replay.active.get(parts.session_id):
            break
        await asyncio.sleep(0.01)
    elsewhere = ChatEngine(dataclasses.replace(parts.engine.deps, settings=settings))  # the stop lands elsewhere
    await elsewhere.stop(parts.session_id, "alice")
    handle = await asyncio.wait_for(submitted, BOUND)
    assert isinstance(handle, TurnHandle)
    events = await asyncio.wait_for(_events(handle), BOUND)
    assert events[-1]["type"] == "finish" and not any(e["type"] == "error" for e in events)
    assert model.requests == []  # no model request after the stop
    assert stored(parts).messages[-1].content == "And now?" and stored(parts).active_turn_id is None


def test_the_renewal_interval_leaves_room_for_one_failed_renewal():
    from chatcore.config import ConfigError, Settings

    defaults = Settings.from_env({})
    assert (defaults.turn_lease_seconds, defaults.turn_lease_renew_seconds) == (30, 10.0)
    assert Settings.from_env({"TURN_LEASE_SECONDS": "3", "TURN_LEASE_RENEW_SECONDS": "1"}).turn_lease_seconds == 3
    with pytest.raises(ConfigError, match="TURN_LEASE_RENEW_SECONDS"):
        Settings.from_env({"TURN_LEASE_SECONDS": "10", "TURN_LEASE_RENEW_SECONDS": "6"})
    with pytest.raises(ConfigError, match="TURN_LEASE_SECONDS"):
        Settings.from_env({"TURN_LEASE_SECONDS": "1"})
