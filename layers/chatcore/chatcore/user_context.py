"""Per-user context: what the assistant knows about a user, added to the system prompt of every chat turn of theirs.

DynamoDB holds it (``PK=USER#<uid>``, ``SK=CONTEXT``, versioned: ``chatcore.dynamo.user_context``); Redis caches it
at ``chat:user-context:{uid}`` beside the sessions, written through with the same compare-and-set, and a chat turn
reads it together with its session in one Redis round trip (``session_with_context``). A miss reads DynamoDB and
fills the cache; without Redis everything is read from DynamoDB. The session a turn reads is its working set
(``SessionService.working_set``).
"""

from __future__ import annotations

import asyncio

from chatcore.models import ChatSession, UserContext, is_valid_session_id
from chatcore.sessions import SessionService


class UserContextService:
    """``chatcore.ports.UserContexts`` over the sessions' store and cache."""

    def __init__(self, sessions: SessionService) -> None:
        self.sessions = sessions
        self.store = sessions.store
        self.cache = sessions.cache

    async def get(self, user_id: str) -> UserContext:
        """The user's context (empty, version 0, when none is stored)."""
        cached = await self.cache.get_user_context(user_id)
        return cached if cached is not None else await self._load_through(user_id)

    async def current(self, user_id: str) -> UserContext:
        """The user's context as DynamoDB holds it (one consistent read; the cache is refreshed): what the user is
        shown and edits by version, never a copy a failed write-through left in the cache."""
        return await self._load_through(user_id)

    async def put(self, user_id: str, text: str, *, expected_version: int | None = None) -> UserContext:
        """Store ``text`` (empty: clear) as the next version; with ``expected_version``, only if it is still the
        stored one (``Conflict`` otherwise). DynamoDB first, then the cache (an older version never replaces it)."""
        saved = await self.store.save_user_context(user_id, text, expected_version=expected_version)
        await self.cache.put_user_context(saved)
        return saved

    async def context_of(self, user_id: str | None) -> str:
        return "" if user_id is None else (await self.get(user_id)).context

    async def session_with_context(self, session_id: str, user_id: str | None) -> tuple[ChatSession | None, str]:
        """The working set a chat turn reads (``SessionService.working_set``; any owner's: the caller checks) and
        ``user_id``'s context text, read from the cache in one round trip; what missed is read from DynamoDB (both
        concurrently) and cached. Unlike ``get_chat_session`` the cached copy is not checked against META here: a
        turn's lease write does that (``SessionLeases``)."""
        if not is_valid_session_id(session_id):
            return None, await self.context_of(user_id)
        cached_session, cached_context = await self.cache.get_working_set_with_user_context(session_id, user_id)

        async def context() -> str:
            if user_id is None:
                return ""
            return (cached_context if cached_context is not None else await self._load_through(user_id)).context

        async def session() -> ChatSession | None:
            if cached_session is not None:
                return cached_session
            return await self.sessions.working_set_through(session_id)

        found, known = await asyncio.gather(session(), context())
        return found, known

    async def _load_through(self, user_id: str) -> UserContext:
        stored = await self.store.load_user_context(user_id)
        await self.cache.put_user_context(stored)
        return stored
