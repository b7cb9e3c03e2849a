"""Following a turn, live and from its replay log, against the in-memory fakes (no Redis, no HTTP)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from chatcore.errors import NotFound
from chatcore.models import ChatSession
from chatcore.replay import BATCH_SECONDS, REPLAY_BROKEN, TurnChannel
from chatcore.stream import (
    DEFAULT_LEVEL,
    LEVELS,
    StreamEvent,
    StreamFinish,
    StreamFinishStep,
    StreamStart,
    StreamTextDelta,
    StreamTextEnd,
    StreamTextStart,
    StreamToolApprovalRequest,
    StreamToolInputAvailable,
)
from chatcore.streams import Chunk, End, Frame, Ping, follow_live, follow_log, open_resume
from chatcore.turn_types import TurnHandle
from chatcore.web.chat_app import ChatApi
from tests.unit.fakes import InMemoryReplay, InMemorySessions

pytestmark = pytest.mark.anyio


async def _collect(frames, limit: int = 100) -> list[Frame]:
    out: list[Frame] = []
    async for frame in frames:
        out.append(frame)
        if len(out) >= limit:
            break
    return out


def _chunks(frames: list[Frame]) -> list[str]:
    return [f.json for f in frames if isinstance(f, Chunk)]


async def test_a_finished_turn_replays_whole_then_ends():
    replay = InMemoryReplay()
    await replay.begin("s1", "t1", None)
    await replay.append("t1", ['{"type":"start"}', '{"type":"finish"}'])
    await replay.end("s1", "t1")
    frames = await _collect(follow_log(replay, "t1", level=DEFAULT_LEVEL, heartbeat_seconds=0.01, idle_seconds=1))
    assert _chunks(frames) == ['{"type":"start"}', '{"type":"finish"}']
    assert isinstance(frames[-1], End)
    # Each chunk carries its entry id; continuing after the first gives the rest only.
    first = next(f for f in frames if isinstance(f, Chunk))
    rest = await _collect(
        follow_log(replay, "t1", first.event_id or "", level=DEFAULT_LEVEL, heartbeat_seconds=0.01, idle_seconds=1)
    )
    assert _chunks(rest) == ['{"type":"finish"}']


async def test_a_live_turn_is_followed_until_its_end():
    replay = InMemoryReplay()
    await replay.begin("s1", "t1", None)
    await replay.append("t1", ['{"type":"start"}'])

    async def later() -> None:
        await asyncio.sleep(0.05)
        await replay.append("t1", ['{"type":"text-delta"}'])
        await asyncio.sleep(0.05)
        await replay.end("s1", "t1")

    task = asyncio.create_task(later())
    frames = await _collect(follow_log(replay, "t1", level=DEFAULT_LEVEL, heartbeat_seconds=0.02, idle_seconds=5))
    await task
    assert _chunks(frames) == ['{"type":"start"}', '{"type":"text-delta"}']
    assert any(isinstance(f, Ping) for f in frames)  # heartbeats while it was silent
    assert isinstance(frames[-1], End)


async def test_a_silent_log_ends_after_the_idle_limit():
    replay = InMemoryReplay()
    await replay.begin("s1", "t1", None)
    await replay.append("t1", ['{"type":"start"}'])
    frames = await _collect(follow_log(replay, "t1", level=DEFAULT_LEVEL, heartbeat_seconds=0.01, idle_seconds=0.05))
    assert isinstance(frames[-1], End) and 3 <= sum(isinstance(f, Ping) for f in frames) <= 6


async def test_an_unreadable_log_ends_the_stream():
    class Broken(InMemoryReplay):
        async def read(self, turn_id, after, *, block_ms):
            return None

    frames = await _collect(follow_log(Broken(), "t1", level=DEFAULT_LEVEL, heartbeat_seconds=0.01, idle_seconds=1))
    assert len(frames) == 1 and isinstance(frames[0], End)


async def test_open_resume_for_owner_other_and_anonymous():
    sessions, replay = InMemorySessions(), InMemoryReplay()
    owned = sessions.add(ChatSession.new("alice"))
    anonymous = sessions.add(ChatSession.new(None))
    assert (await open_resume(sessions, replay, owned.session_id, "alice")).turn_id is None  # nothing active
    await replay.begin(owned.session_id, "t1", None)
    assert (await open_resume(sessions, replay, owned.session_id, "alice")).turn_id == "t1"
    for caller in ("mallory", None):
        with pytest.raises(NotFound):
            await open_resume(sessions, replay, owned.session_id, caller)
    assert (await open_resume(sessions, replay, anonymous.session_id, None)).turn_id is None

    class NoCache(InMemoryReplay):
        @property
        def enabled(self) -> bool:
            return False

    resume = await open_resume(sessions, NoCache(), owned.session_id, "alice")
    assert resume.turn_id is None and "no cache" in resume.reason


async def test_resuming_after_the_end_of_a_finished_log_ends_at_once():
    """Issue 12 item 4: a Last-Event-ID at (or past) the last entry of a finished log pinged until the idle limit."""
    replay = InMemoryReplay()
    await replay.begin("s1", "t1", None)
    await replay.append("t1", ['{"type":"start"}', '{"type":"finish"}'])
    await replay.end("s1", "t1")
    last = f"1-{len(replay.logs['t1']) - 1}"
    frames = await _collect(
        follow_log(replay, "t1", last, level=DEFAULT_LEVEL, heartbeat_seconds=0.01, idle_seconds=5), limit=5
    )
    assert len(frames) == 1 and isinstance(frames[0], End)


async def test_readers_of_two_levels_follow_one_turn_each_at_its_level():
    """The log and the live queue hold the stored form; each reader, live or resuming, adapts it to its level."""
    replay = InMemoryReplay()
    await replay.begin("s1", "t1", None)
    channel = TurnChannel(replay, "s1", "t1")
    handle = TurnHandle("s1", "t1", channel, asyncio.get_running_loop().create_future())
    for event in (
        StreamStart(message_id="t1"),
        StreamToolInputAvailable(tool_call_id="c1", tool_name="rm", input={"p": "x"}),
        StreamToolApprovalRequest(approval_id="a1", tool_call_id="c1", tool_name="rm", input={"p": "x"}),
        StreamFinishStep(),
        StreamFinish(finish_reason="tool-calls"),
    ):
        channel.publish(event)
    await channel.close()
    tool = {"toolCallId": "c1", "toolName": "rm", "input": {"p": "x"}, "providerExecuted": True, "dynamic": True}
    start = [{"type": "start", "messageId": "t1"}, {"type": "tool-input-available", **tool}]
    approval = {"approvalId": "a1", "toolCallId": "c1", "toolName": "rm", "input": {"p": "x"}, "state": "requested"}
    expected = {
        "v5": [
            *start,
            {"type": "data-approval", "id": "a1", "data": approval},
            {"type": "finish-step"},
            {"type": "finish"},
        ],
        "v7": [
            *start,
            {"type": "tool-approval-request", "approvalId": "a1", "toolCallId": "c1"},
            {"type": "finish-step"},
            {"type": "finish", "finishReason": "tool-calls"},
        ],
    }
    for name, chunks in expected.items():
        level = LEVELS[name]
        live = await _collect(follow_live(handle, level=level, heartbeat_seconds=1))
        logged = await _collect(follow_log(replay, "t1", level=level, heartbeat_seconds=0.01, idle_seconds=1))
        assert [json.loads(c) for c in _chunks(live)] == chunks, name
        assert [json.loads(c) for c in _chunks(logged)] == chunks, name


@dataclass
class _LosingReplay(InMemoryReplay):
    """A replay log whose appends are lost while ``down`` (Redis failed, or its circuit is open)."""

    down: bool = False

    def available(self) -> bool:
        return not self.down

    async def append(self, turn_id: str, chunks: list[str]) -> None:
        if not self.down:
            await super().append(turn_id, chunks)


async def test_a_log_that_lost_an_append_stops_there_and_ends_with_an_error():
    """Chunks published while Redis was down never reach the log; appending the later ones would replay an
    answer with a hole. The log keeps what it had, then an error chunk and its end."""
    replay = _LosingReplay()
    channel = TurnChannel(replay, "s1", "t1")
    before: list[StreamEvent] = [
        StreamStart(message_id="t1"),
        StreamTextStart(id="x"),
        StreamTextDelta(id="x", delta="a"),
    ]
    for event in before:
        channel.publish(event)
    await asyncio.sleep(BATCH_SECONDS * 5)
    replay.down = True
    channel.publish(StreamTextDelta(id="x", delta="b"))
    await asyncio.sleep(BATCH_SECONDS * 5)
    replay.down = False
    after: list[StreamEvent] = [StreamTextDelta(id="x", delta="c"), StreamTextEnd(id="x"), StreamFinish()]
    for event in after:
        channel.publish(event)
    await channel.close()
    logged = [json.loads(c) if c is not None else None for c in replay.logs["t1"]]
    assert [c["type"] if c else None for c in logged] == ["start", "text-start", "text-delta", "error", None]
    assert logged[2]["delta"] == "a" and logged[3]["errorText"] == REPLAY_BROKEN


@dataclass
class _CountingReplay(InMemoryReplay):
    """Counts the log's round trips."""

    appends: int = 0
    ends: int = 0

    async def append(self, turn_id: str, chunks: list[str]) -> None:
        self.appends += 1
        await super().append(turn_id, chunks)

    async def end(self, session_id: str, turn_id: str, last: Sequence[str] = ()) -> None:
        self.ends += 1
        await super().end(session_id, turn_id, last)


async def test_close_writes_the_last_chunks_with_the_end_entry_without_waiting_for_the_batch():
    # A turn's last chunks (text-end, finish) come right before its close: the client's end of stream waits for
    # the log's end entry, so it must not wait for the batch timer too, nor take two round trips.
    replay = _CountingReplay()
    await replay.begin("s1", "t1", None)
    channel = TurnChannel(replay, "s1", "t1", batch_seconds=30.0)
    channel.publish(StreamStart(message_id="t1"))
    await asyncio.sleep(0)  # the writer took the wake-up and waits for the batch
    channel.publish(StreamFinish())
    await asyncio.wait_for(channel.close(), timeout=5)
    assert [json.loads(c)["type"] if c else None for c in replay.logs["t1"]] == ["start", "finish", None]
    assert (replay.appends, replay.ends) == (0, 1)


async def test_chunks_ready_together_go_out_in_one_write():
    # The first token comes with its text's start: one write (one read for the client, one relay by the Web
    # Adapter) instead of one per chunk. A chunk published later is a write of its own.
    replay = InMemoryReplay()
    channel = TurnChannel(replay, "s1", "t1")
    handle = TurnHandle("s1", "t1", channel, asyncio.get_running_loop().create_future())
    frames = follow_live(handle, level=DEFAULT_LEVEL, heartbeat_seconds=5)
    for event in (StreamStart(message_id="t1"), StreamTextStart(id="x"), StreamTextDelta(id="x", delta="a")):
        channel.publish(event)
    response = ChatApi._stream(frames)
    writes: list[bytes] = []

    async def receive() -> dict[str, object]:
        await asyncio.Event().wait()
        return {}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            writes.append(message["body"])
            if len(writes) == 1:
                channel.publish(StreamTextDelta(id="x", delta="b"))
                channel.publish(StreamTextEnd(id="x"))
                channel.publish(StreamFinish())
                await channel.close()

    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "method": "POST", "path": "/"}
    await asyncio.wait_for(response(scope, receive, send), timeout=5)
    events = [
        [json.loads(line[6:]) if line != "data: [DONE]" else "[DONE]" for line in w.decode().split("\n\n") if line]
        for w in writes
    ]
    assert [[e if e == "[DONE]" else e["type"] for e in write] for write in events] == [
        ["start", "text-start", "text-delta"],
        ["text-delta", "text-end", "finish", "[DONE]"],
    ]


@dataclass
class _StuckReplay(InMemoryReplay):
    """A replay log whose appends never complete (Redis stalled until the turn's task is cancelled)."""

    appending: asyncio.Event = field(default_factory=asyncio.Event)

    async def append(self, turn_id: str, chunks: list[str]) -> None:
        self.appending.set()
        await asyncio.Event().wait()


async def test_a_close_cancelled_during_an_append_ends_the_log_with_an_error_not_a_gap():
    # The turn's task cancelled (a shutdown) while a batch was being appended: that batch may be lost, so the chunks
    # after it must not follow it in the log; the log ends with an error chunk instead.
    replay = _StuckReplay()
    await replay.begin("s1", "t1", None)
    channel = TurnChannel(replay, "s1", "t1", batch_seconds=0)
    channel.publish(StreamTextDelta(id="x", delta="a"))
    await replay.appending.wait()
    channel.publish(StreamTextDelta(id="x", delta="b"))
    closing = asyncio.create_task(channel.close())
    await asyncio.sleep(0)
    closing.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await closing
    logged = [json.loads(c) if c is not None else None for c in replay.logs["t1"]]
    assert [c["type"] if c else None for c in logged] == ["error", None]
