"""Redis: the session cache and the connector every Redis user goes through. Always optional, never the only copy.

``chat:session:{session_id}`` is a hash ``{v: version, d: session JSON}`` with a TTL: the whole session, as
``get_chat_session`` returns it. ``chat:working-set:{session_id}`` is the same for what a chat turn reads (its
working set, ``ChatSession.working_set``: the recent part of the active path, bounded whatever the session's
length). Every invalidation drops both, fenced at the same version. Writes go through a Lua
compare-and-set, so an older version never replaces a newer one, whatever order writers finish in.
Invalidation keeps ``v`` and drops ``d``: the next read goes to DynamoDB, and a slow writer still holding an older
version cannot put it back. None of this survives a write-through that failed (Redis frozen, restarted empty, or
skipped by an open circuit), so a copy is never trusted alone: readers compare its ``v`` with META's
(``SessionService.get_chat_session``, the turn's lease write).

``chat:user-context:{user_id}`` holds a user's context the same way (its absence too, as version 0, so a user
without one costs a warm turn no DynamoDB read); a chat turn reads it with the session in one pipeline.

Every Redis failure is logged, counted (``CacheErrors``) and answered as a miss: a request that DynamoDB can serve
never fails because of Redis. After a failure the cache is skipped for ``retry_after`` seconds, so a dead Redis
does not add a connect timeout to every request.

Cluster mode (ElastiCache Serverless): every Redis user here keeps each atomic step on one key — one-key Lua
scripts, single-stream XREAD, non-transactional pipelines (split per node by the cluster client) — so no key
needs a hash tag. A MULTI or a script over several keys would need them (``{...}`` around the shared part).

``redis`` is imported when the first client is made, not with this module: about a third of a second of a cold
start that many first requests (a session listing, a health check, a callback) never spend on Redis. The package
imports all its clients at once (``redis/__init__`` loads the cluster client too), so it is all or nothing.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import ValidationError

from chatcore.models import ChatSession, UserContext
from chatcore.observability import count, logger

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster

T = TypeVar("T")

type RedisClient = Redis | RedisCluster
RESP_VERSION = 2

SESSION_KEY = "chat:session:{session_id}"
WORKING_SET_KEY = "chat:working-set:{session_id}"
USER_CONTEXT_KEY = "chat:user-context:{user_id}"

# KEYS[1] session key; ARGV: version, json, ttl. Returns 1 if written.
_CAS_SCRIPT = """
local current = redis.call('HGET', KEYS[1], 'v')
local incoming = tonumber(ARGV[1])
if current then
  current = tonumber(current)
  if incoming < current then return 0 end
  if incoming == current and redis.call('HEXISTS', KEYS[1], 'd') == 1 then return 0 end
end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'd', ARGV[2])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
"""

# KEYS[1] session key; ARGV: version (or -1 when unknown), ttl. Drops the data, keeps the highest version seen.
_INVALIDATE_SCRIPT = """
redis.call('HDEL', KEYS[1], 'd')
local incoming = tonumber(ARGV[1])
if incoming >= 0 then
  local current = tonumber(redis.call('HGET', KEYS[1], 'v') or '-1')
  if incoming > current then redis.call('HSET', KEYS[1], 'v', ARGV[1]) end
end
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2])) end
return 1
"""


def _is_outage(exc: Exception) -> bool:
    """Whether ``exc`` is what a Redis outage raises. RedisClusterException is not a RedisError: the cluster client
    raises it when no node can be reached (refused, TLS verification failed) or the slots are not covered."""
    from redis.exceptions import RedisClusterException, RedisError

    return isinstance(exc, RedisError | RedisClusterException | OSError | TimeoutError)


def session_key(session_id: str) -> str:
    return SESSION_KEY.format(session_id=session_id)


def working_set_key(session_id: str) -> str:
    return WORKING_SET_KEY.format(session_id=session_id)


def user_context_key(user_id: str) -> str:
    return USER_CONTEXT_KEY.format(user_id=user_id)


class RedisConnector:
    """One ``redis.asyncio`` client per event loop (Mangum may run invocations on a fresh loop), plus the
    fail-open circuit shared by every Redis user.

    ``cluster`` picks the cluster-aware client (``RedisCluster``: slot map, MOVED/ASK); ElastiCache Serverless
    is cluster-mode, so a deployment that creates the cache sets it. A ``rediss://`` URL means TLS with the
    server's certificate and host name verified, against ``ca_file`` when given, else the system trust store.
    RESP2 is pinned: the replies are parsed in their RESP2 shapes (XREAD as a list of [stream, entries])."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 0.5,
        retry_after: float = 5.0,
        cluster: bool = False,
        ca_file: str = "",
    ) -> None:
        self.url = url
        self.cluster = cluster
        self._ca_file = ca_file
        self._timeout = timeout
        self._retry_after = retry_after
        # Connections belong to an event loop: one set of clients per loop (Mangum and per-invocation
        # asyncio.run() may use several over a container's life); a finished loop's entry goes with it.
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[bool, RedisClient]] = (
            weakref.WeakKeyDictionary()
        )
        self._down_until = 0.0

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    def client(self, *, blocking: bool = False) -> RedisClient:
        """The client for this event loop; ``blocking`` gives one without a socket timeout, for XREAD BLOCK."""
        clients = self._clients.setdefault(asyncio.get_running_loop(), {})
        client = clients.get(blocking)
        if client is None:
            client = self._new_client(blocking)
            clients[blocking] = client
        return client

    def _new_client(self, blocking: bool) -> RedisClient:
        options: dict[str, Any] = {
            "socket_timeout": None if blocking else self._timeout,
            "socket_connect_timeout": self._timeout,
            "health_check_interval": 30,
            "protocol": RESP_VERSION,
        }
        if self._ca_file and self.url.startswith("rediss://"):
            options["ssl_ca_certs"] = self._ca_file
        if self.cluster:
            from redis.asyncio.cluster import RedisCluster

            return RedisCluster.from_url(self.url, **options)
        from redis.asyncio import Redis

        return Redis.from_url(self.url, **options)

    def available(self) -> bool:
        return self.enabled and time.monotonic() >= self._down_until

    async def run(
        self,
        operation: str,
        call: Callable[[RedisClient], Awaitable[T]],
        fallback: T,
        *,
        blocking: bool = False,
    ) -> T:
        """Run ``call`` against Redis; on any Redis failure log, count, open the circuit and return ``fallback``."""
        if not self.available():
            return fallback
        try:
            return await call(self.client(blocking=blocking))
        except Exception as exc:
            if not _is_outage(exc):
                raise
            self._down_until = time.monotonic() + self._retry_after
            count("CacheErrors")
            logger.warning("redis unavailable, continuing without it", operation=operation, error=repr(exc))
            return fallback

    def renew(self) -> None:
        """Forget every client, unclosed (after a SnapStart restore their connections are gone), and the circuit's
        state: the next operation connects anew."""
        self._clients = weakref.WeakKeyDictionary()
        self._down_until = 0.0

    async def close(self) -> None:
        """Close the clients of the running loop (those of other loops cannot be closed from here)."""
        clients = self._clients.pop(asyncio.get_running_loop(), {})
        for client in clients.values():
            await client.aclose()


class SessionCache:
    def __init__(self, connector: RedisConnector, *, ttl_seconds: int) -> None:
        self._redis = connector
        self._ttl = ttl_seconds

    @property
    def connector(self) -> RedisConnector:
        return self._redis

    @property
    def enabled(self) -> bool:
        return self._redis.enabled

    def available(self) -> bool:
        """Whether a read may find anything: Redis is configured and its circuit is closed."""
        return self._redis.available()

    async def close(self) -> None:
        await self._redis.close()

    async def get(self, session_id: str) -> ChatSession | None:
        async def call(client: RedisClient) -> Any:
            return await client.hget(session_key(session_id), "d")

        return await self._session(session_id, await self._redis.run("cache.get", call, None))

    async def get_working_set_with_user_context(
        self, session_id: str, user_id: str | None
    ) -> tuple[ChatSession | None, UserContext | None]:
        """A turn's working set (``chat:working-set:``) and, for a signed-in caller, the user's context, in one
        round trip; None for each that is not cached."""

        async def call(client: RedisClient) -> Any:
            async with client.pipeline(transaction=False) as pipe:
                pipe.hget(working_set_key(session_id), "d")
                if user_id is not None:
                    pipe.hget(user_context_key(user_id), "d")
                return await pipe.execute()

        raw = await self._redis.run("cache.get_working_set", call, [None, None])
        session = await self._session(session_id, raw[0])
        if session is not None and not session.partial:
            session = None  # not a working set: read it again
        context = await self._user_context(user_id, raw[1]) if user_id is not None and len(raw) > 1 else None
        return session, context

    async def get_user_context(self, user_id: str) -> UserContext | None:
        async def call(client: RedisClient) -> Any:
            return await client.hget(user_context_key(user_id), "d")

        return await self._user_context(user_id, await self._redis.run("cache.get_user_context", call, None))

    async def _session(self, session_id: str, raw: Any) -> ChatSession | None:
        if raw is None:
            count("CacheMisses")
            return None
        try:
            session = ChatSession.model_validate_json(raw)
        except ValidationError:
            logger.warning("unreadable cache entry dropped", session_id=session_id)
            await self.invalidate(session_id)
            return None
        count("CacheHits")
        return session

    async def _user_context(self, user_id: str, raw: Any) -> UserContext | None:
        if raw is None:
            return None
        try:
            found = UserContext.model_validate_json(raw)
        except ValidationError:
            found = None
        if found is None or found.user_id != user_id:
            logger.warning("unreadable user context cache entry dropped")
            await self._drop(user_context_key(user_id), None, "cache.invalidate_user_context")
            return None
        return found

    async def put(self, session: ChatSession) -> bool:
        """Write the session if its version is newer than the cached one; True if written. A working set
        (``partial``) is refused: it is not the whole session."""
        if session.partial:
            raise ValueError("a working set is not the whole session: cache it with put_working_set")
        return await self._put(session_key(session.session_id), session.version, session.model_dump_json(), "cache.put")

    async def put_working_set(self, working: ChatSession) -> bool:
        """Cache a turn's working set read from DynamoDB, if its version is newer than the cached one."""
        if not working.partial:
            raise ValueError("not a working set: ChatSession.working_set() makes one")
        key = working_set_key(working.session_id)
        return await self._put(key, working.version, working.model_dump_json(), "cache.put_working_set")

    async def put_written(self, working: ChatSession, *, whole: ChatSession | None = None) -> None:
        """After a write: cache the working set and, in the same round trip, the whole session it was cut from
        when given — else drop the whole session's copy, fenced at this version (it is older now)."""
        if not working.partial:
            raise ValueError("not a working set: ChatSession.working_set() makes one")
        if whole is not None and (whole.partial or whole.version != working.version):
            raise ValueError("the whole session must be the working set's, at its version")
        sid, version = working.session_id, working.version

        async def call(client: RedisClient) -> Any:
            async with client.pipeline(transaction=False) as pipe:
                pipe.eval(_CAS_SCRIPT, 1, working_set_key(sid), version, working.model_dump_json(), self._ttl)
                if whole is not None:
                    pipe.eval(_CAS_SCRIPT, 1, session_key(sid), version, whole.model_dump_json(), self._ttl)
                else:
                    pipe.eval(_INVALIDATE_SCRIPT, 1, session_key(sid), version, self._ttl)
                return await pipe.execute()

        await self._redis.run("cache.put_written", call, None)

    async def put_user_context(self, found: UserContext) -> bool:
        """Write the user's context (version 0: none stored) if its version is newer than the cached one."""
        key = user_context_key(found.user_id)
        return await self._put(key, found.version, found.model_dump_json(), "cache.put_user_context")

    async def invalidate(self, session_id: str, *, version: int | None = None) -> None:
        """Make the next read go to DynamoDB. Pass the version just written, when known, so a slower writer
        holding an older copy cannot re-populate the cache with it."""
        await self._drop_all((session_key(session_id), working_set_key(session_id)), version, "cache.invalidate")

    async def _drop_all(self, keys: tuple[str, ...], version: int | None, operation: str) -> None:
        """``_drop`` of several keys in one round trip (each script stays on one key: see cluster mode above)."""

        async def call(client: RedisClient) -> Any:
            async with client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.eval(_INVALIDATE_SCRIPT, 1, key, -1 if version is None else version, self._ttl)
                return await pipe.execute()

        await self._redis.run(operation, call, None)

    async def _put(self, key: str, version: int, payload: str, operation: str) -> bool:
        async def call(client: RedisClient) -> Any:
            return await client.eval(_CAS_SCRIPT, 1, key, version, payload, self._ttl)

        return bool(await self._redis.run(operation, call, 0))

    async def _drop(self, key: str, version: int | None, operation: str) -> None:
        async def call(client: RedisClient) -> Any:
            return await client.eval(_INVALIDATE_SCRIPT, 1, key, -1 if version is None else version, self._ttl)

        await self._redis.run(operation, call, None)
