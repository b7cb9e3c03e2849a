"""Following a turn's stream, live or from its replay log: what a client receives, as frames (a chunk, a heartbeat,
the end). The web layer only turns frames into SSE bytes. Both followers read the chunks' stored form and adapt
each to the reader's protocol level (``ProtocolLevel.adapt``), so two clients of different levels can follow one
turn.

* ``follow_live``: a turn running in this process; a heartbeat while the model is silent. When the client goes
  away the turn still completes (a Lambda must not freeze it half-done), so the follower waits for it.
* ``follow_log``: the replay log of any turn, from the start or after an entry id, then live until its end entry;
  a heartbeat per idle block, and an end after ``idle_seconds`` without news (below the function's timeout) or
  when the log cannot be read (the answer is in DynamoDB). ``on_idle`` runs after each idle block with the seconds idle
  so far (the chat app closes a turn found dead there, so the log gets its end).
* ``open_resume``: what ``GET /chat/{id}/stream`` resumes for a caller — a follower, or why there is none.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace

import anyio

from chatcore.errors import NotFound
from chatcore.ports import ReplayLog, SessionRepository
from chatcore.stream import ProtocolLevel
from chatcore.turn_types import TurnHandle


@dataclass(frozen=True)
class Chunk:
    json: str  # one protocol chunk, strict JSON, as the reader's level has it
    event_id: str | None = None  # its replay-log entry id (for Last-Event-ID)
    # Another frame is ready right after this one: the web layer sends them together (one write, one read for
    # the client; e.g. a text's start with its first delta).
    more: bool = field(default=False, compare=False)


class Ping:
    """A heartbeat: nothing to say yet."""


class End:
    """The stream is over."""


Frame = Chunk | Ping | End
PING_FRAME, END_FRAME = Ping(), End()


async def follow_live(handle: TurnHandle, *, level: ProtocolLevel, heartbeat_seconds: float) -> AsyncIterator[Frame]:
    queue = handle.channel.listen()
    finished = False
    try:
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), timeout=heartbeat_seconds)
            except TimeoutError:
                yield PING_FRAME
                continue
            ready = [item]
            while ready[-1] is not None and not queue.empty():
                ready.append(queue.get_nowait())
            frames: list[Frame] = []
            for published in ready:
                if published is None:
                    finished = True
                    frames.append(END_FRAME)
                else:
                    frames.extend(Chunk(text) for text in level.adapt_json(published.json))
            for frame in _together(frames):
                yield frame
            if finished:
                return
    finally:
        if not finished and handle.task is not None:
            with anyio.CancelScope(shield=True):
                await asyncio.wait({handle.task})


async def follow_log(
    replay: ReplayLog,
    turn_id: str,
    after: str = "0-0",
    *,
    level: ProtocolLevel,
    heartbeat_seconds: float,
    idle_seconds: float,
    on_idle: Callable[[float], Awaitable[None]] | None = None,
) -> AsyncIterator[Frame]:
    cursor, idle = after, 0.0
    while True:
        entries = await replay.read(turn_id, cursor, block_ms=int(heartbeat_seconds * 1000))
        if entries is None:
            yield END_FRAME
            return
        if not entries:
            if await replay.ended(turn_id):  # the cursor is past the end entry (a Last-Event-ID at the end)
                yield END_FRAME
                return
            idle += heartbeat_seconds
            if idle >= idle_seconds:
                yield END_FRAME
                return
            yield PING_FRAME
            if on_idle is not None:
                await on_idle(idle)
            continue
        idle = 0.0
        frames: list[Frame] = []
        for entry in entries:
            cursor = entry.entry_id
            if entry.chunk is None:
                frames.append(END_FRAME)
                break
            texts = level.adapt_json(entry.chunk)
            for i, text in enumerate(texts):
                # The entry id goes on its last chunk: a client cut off before it gets all of them again.
                frames.append(Chunk(text, entry.entry_id if i == len(texts) - 1 else None))
        for frame in _together(frames):
            yield frame
        if frames and frames[-1] is END_FRAME:
            return


def _together(frames: list[Frame]) -> list[Frame]:
    """``frames`` with every chunk but the last marked as followed by more (sent in one write)."""
    return [replace(f, more=True) if isinstance(f, Chunk) and i < len(frames) - 1 else f for i, f in enumerate(frames)]


@dataclass(frozen=True)
class Resume:
    turn_id: str | None  # None: nothing to resume
    reason: str = ""  # why, when the cache is the reason


async def open_resume(sessions: SessionRepository, replay: ReplayLog, session_id: str, caller: str | None) -> Resume:
    """The turn a caller may resume in a session; another user's session (or an owned one, for an anonymous
    caller) is ``NotFound``."""
    if await sessions.working_set_of(session_id, caller) is None:  # the owner is all it needs: no whole path
        raise NotFound("session not found")
    if not replay.enabled:
        return Resume(None, "no cache configured: streams cannot be resumed")
    turn_id = await replay.active_turn(session_id)
    if turn_id is None and not replay.available():
        return Resume(None, "cache unavailable")
    return Resume(turn_id)
