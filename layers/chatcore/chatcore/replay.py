"""Replay logs of chat turns in Redis, and the per-turn pointers that resume and stop need.

    chat:turn:{turn_id}:log          a Redis Stream: one entry per chunk ({c: json}, the chunk's stored form, which
                                     each reader adapts to its protocol level), then an end entry ({end: 1})
    chat:active:{session_id}         the session's active turn id (what GET /chat/{id}/stream resumes)
    chat:cmid:{session_id}:{cmid}    the turn a client message id started (an idempotent resend attaches to it)
    chat:cancel:{turn_id}            set by POST /chat/{id}/stop; the turn polls it

All of it expires: the log outlives its turn by ``ttl`` seconds. Without Redis every call is a no-op and resume
answers 204; the turn itself still runs and is persisted in DynamoDB.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chatcore.cache import RedisClient, RedisConnector
from chatcore.stream import StreamError, StreamEvent, encode_json

if TYPE_CHECKING:
    from chatcore import ports

BATCH_SECONDS = 0.02
REPLAY_BROKEN = "The live stream was interrupted. The answer is saved: reload the conversation to see it."
READ_GRACE_SECONDS = 1.0  # how long past its BLOCK time an XREAD may take before Redis counts as down

_DELETE_IF_EQUAL = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


# Close a log that has no end entry yet: its closing chunks, then the end entry, in one step (two closers of one
# dead turn write them once). ARGV[1] is the TTL, the rest are chunks. A log that is gone stays gone.
_CLOSE_UNLESS_ENDED = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #last > 0 then
  local fields = last[1][2]
  for i = 1, #fields, 2 do
    if fields[i] == 'end' then return 0 end
  end
end
for i = 2, #ARGV do redis.call('XADD', KEYS[1], '*', 'c', ARGV[i]) end
redis.call('XADD', KEYS[1], '*', 'end', '1')
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
"""


def log_key(turn_id: str) -> str:
    return f"chat:turn:{turn_id}:log"


def active_key(session_id: str) -> str:
    return f"chat:active:{session_id}"


def cmid_key(session_id: str, client_message_id: str) -> str:
    return f"chat:cmid:{session_id}:{client_message_id}"


def cancel_key(turn_id: str) -> str:
    return f"chat:cancel:{turn_id}"


@dataclass(frozen=True)
class LogEntry:
    entry_id: str
    chunk: str | None  # None marks the end of the turn


class ReplayLog:
    def __init__(self, connector: RedisConnector, *, ttl_seconds: int) -> None:
        self._redis = connector
        self._ttl = ttl_seconds

    @property
    def enabled(self) -> bool:
        return self._redis.enabled

    def available(self) -> bool:
        return self._redis.available()

    async def begin(self, session_id: str, turn_id: str, client_message_id: str | None) -> bool:
        """Point the session at this turn; True when the log is being kept."""

        async def call(client: RedisClient) -> bool:
            async with client.pipeline(transaction=False) as pipe:
                pipe.set(active_key(session_id), turn_id, ex=self._ttl)
                if client_message_id:
                    pipe.set(cmid_key(session_id, client_message_id), turn_id, ex=self._ttl)
                await pipe.execute()
            return True

        return await self._redis.run("replay.begin", call, False)

    async def append(self, turn_id: str, chunks: list[str]) -> None:
        async def call(client: RedisClient) -> None:
            async with client.pipeline(transaction=False) as pipe:
                for chunk in chunks:
                    pipe.xadd(log_key(turn_id), {"c": chunk})
                pipe.expire(log_key(turn_id), self._ttl)
                await pipe.execute()

        await self._redis.run("replay.append", call, None)

    async def end(self, session_id: str, turn_id: str, last: Sequence[str] = ()) -> None:
        """Append ``last`` (the chunks not yet appended) and the end entry, and drop the session's pointer, in one
        round trip."""

        # On a cluster the three keys may sit on three nodes, written in parallel: any order is correct (a resume
        # that finds no pointer answers 204; one that finds it reads the log up to the end entry).
        async def call(client: RedisClient) -> None:
            async with client.pipeline(transaction=False) as pipe:
                for chunk in last:
                    pipe.xadd(log_key(turn_id), {"c": chunk})
                pipe.xadd(log_key(turn_id), {"end": "1"})
                pipe.expire(log_key(turn_id), self._ttl)
                pipe.eval(_DELETE_IF_EQUAL, 1, active_key(session_id), turn_id)
                pipe.delete(cancel_key(turn_id))
                await pipe.execute()

        await self._redis.run("replay.end", call, None)

    async def close_unless_ended(self, session_id: str, turn_id: str, chunks: list[str]) -> bool:
        """End the log of a turn that died before its end entry: ``chunks`` then the end entry, unless it has its
        end already (or is gone); the session's pointer to it is dropped either way. True when it was closed."""

        async def call(client: RedisClient) -> bool:
            closed = await client.eval(_CLOSE_UNLESS_ENDED, 1, log_key(turn_id), self._ttl, *chunks)
            async with client.pipeline(transaction=False) as pipe:
                pipe.eval(_DELETE_IF_EQUAL, 1, active_key(session_id), turn_id)
                pipe.delete(cancel_key(turn_id))
                await pipe.execute()
            return bool(closed)

        return await self._redis.run("replay.close", call, False)

    async def active_turn(self, session_id: str) -> str | None:
        async def call(client: RedisClient) -> Any:
            return await client.get(active_key(session_id))

        raw = await self._redis.run("replay.active", call, None)
        return raw.decode() if isinstance(raw, bytes) else None

    async def turn_of_client_message(self, session_id: str, client_message_id: str) -> str | None:
        async def call(client: RedisClient) -> Any:
            return await client.get(cmid_key(session_id, client_message_id))

        raw = await self._redis.run("replay.cmid", call, None)
        return raw.decode() if isinstance(raw, bytes) else None

    async def read(self, turn_id: str, after: str, *, block_ms: int) -> list[LogEntry] | None:
        """Entries after ``after`` ("0-0" = from the start), waiting up to ``block_ms`` for new ones.
        None when Redis failed (the reader should stop)."""

        async def call(client: RedisClient) -> Any:
            # The blocking client has no socket timeout (XREAD BLOCK waits on purpose): bound the wait here, or a
            # frozen server (paused, failing over) would hold the reader, heartbeats and all, until it woke up.
            read = client.xread({log_key(turn_id): after}, count=500, block=block_ms)
            return await asyncio.wait_for(read, block_ms / 1000 + READ_GRACE_SECONDS)

        result = await self._redis.run("replay.read", call, None, blocking=True)
        if result is None:
            return None
        entries: list[LogEntry] = []
        for _key, items in result:
            for entry_id, fields in items:
                chunk = fields.get(b"c")
                entries.append(LogEntry(entry_id.decode(), chunk.decode() if chunk is not None else None))
        return entries

    async def ended(self, turn_id: str) -> bool:
        """True when the turn's log holds its end entry, or is gone (nothing more will come)."""

        async def call(client: RedisClient) -> Any:
            return await client.xrevrange(log_key(turn_id), count=1)

        last = await self._redis.run("replay.ended", call, None)
        if last is None:
            return False  # Redis failed: the reader finds out on its next read
        return not last or b"end" in last[0][1]

    async def exists(self, turn_id: str) -> bool:
        async def call(client: RedisClient) -> Any:
            return await client.exists(log_key(turn_id))

        return bool(await self._redis.run("replay.exists", call, 0))

    async def request_cancel(self, turn_id: str) -> bool:
        async def call(client: RedisClient) -> bool:
            await client.set(cancel_key(turn_id), "1", ex=self._ttl)
            return True

        return await self._redis.run("replay.cancel", call, False)

    async def cancel_requested(self, turn_id: str) -> bool:
        async def call(client: RedisClient) -> Any:
            return await client.exists(cancel_key(turn_id))

        return bool(await self._redis.run("replay.cancelled", call, 0))


@dataclass(frozen=True)
class Published:
    event: StreamEvent
    json: str


class TurnChannel:
    """Fan-out of one turn's events, in order: to live listeners (in-process queues) and, batched, to the
    replay log, both in the stored form (``StreamEvent.chunk()``; each reader adapts it to its protocol level).
    Publishing never waits on Redis; ``close()`` flushes and writes the end entry.

    Once an append is lost (Redis failed, or its circuit was open), nothing more is appended: later chunks after a
    hole would replay as an answer with a gap. ``close()`` then ends the log with an error chunk instead, so a
    client that resumes sees the replay stopped (the answer itself is stored in DynamoDB)."""

    def __init__(
        self,
        log: ports.ReplayLog,
        session_id: str,
        turn_id: str,
        *,
        encode: Callable[[StreamEvent], str] = lambda event: encode_json(event.chunk()),
        batch_seconds: float = BATCH_SECONDS,
    ) -> None:
        self._log = log
        self.session_id = session_id
        self.turn_id = turn_id
        self._encode = encode
        self._batch_seconds = batch_seconds
        self._listeners: list[asyncio.Queue[Published | None]] = []
        self._history: list[Published] = []
        self._pending: list[str] = []
        self._wake = asyncio.Event()
        self._closed = asyncio.Event()  # set by close(); also cuts the writer's batch wait short
        self._broken = False  # an append was lost: the log stops where it is complete
        self._writer: asyncio.Task[None] | None = None
        if log.enabled:
            self._writer = asyncio.create_task(self._write_loop())

    def listen(self) -> asyncio.Queue[Published | None]:
        """A queue that receives every event published so far and from now on; None marks the end."""
        queue: asyncio.Queue[Published | None] = asyncio.Queue()
        for item in self._history:
            queue.put_nowait(item)
        if self._closed.is_set():
            queue.put_nowait(None)
        else:
            self._listeners.append(queue)
        return queue

    def publish(self, event: StreamEvent) -> None:
        if self._closed.is_set():
            return
        item = Published(event, self._encode(event))
        self._history.append(item)
        for queue in self._listeners:
            queue.put_nowait(item)
        if self._writer is not None:
            self._pending.append(item.json)
            self._wake.set()

    async def _write_loop(self) -> None:
        """Append what was published, a batch per ``batch_seconds``, until ``close`` (which writes the rest with
        the end entry: it does not wait for the batch timer)."""
        while not self._closed.is_set():
            await self._wake.wait()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._batch_seconds):  # coalesce a burst of tokens into one pipeline
                    await self._closed.wait()
            if self._closed.is_set():
                return
            self._wake.clear()
            batch, self._pending = self._pending, []
            if batch and not self._broken:
                try:
                    await self._log.append(self.turn_id, batch)
                except asyncio.CancelledError:
                    self._broken = True  # cut off mid-append (the turn's task was cancelled): the batch may be lost
                    raise
                self._broken = not self._log.available()  # the append failed, or was skipped

    async def close(self) -> None:
        """End the turn: write the log's last chunks and its end entry (one round trip) first, then release the
        live listeners, so a client that resumes right after its stream ended never replays the finished turn."""
        if self._closed.is_set():
            return
        self._closed.set()
        if self._writer is not None:
            self._wake.set()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer  # an append under way completes first: the log keeps its order
            rest, self._pending = self._pending, []
            if self._broken:
                rest = [self._encode(StreamError(error_text=REPLAY_BROKEN))]
            await self._log.end(self.session_id, self.turn_id, rest)
        for queue in self._listeners:
            queue.put_nowait(None)
