"""The session service: the API the rest of the product (and the design documents) use.

Reads go through the cache and fall back to DynamoDB; writes go to DynamoDB first, then through to the cache.
``get_chat_session`` returns the whole active path; a chat turn reads only its working set (``working_set``: the
recent part of the path, ``ChatSession.working_set``), cached under its own key, so a turn's cost does not grow
with the conversation.
A session of another user reads as ``None`` / ``NotFound``, never as "forbidden". Feedback on answers (one rating
per turn, counted as the ``Feedback`` metric by rating) is kept beside the session and shown with its messages.

Module-level functions (``get_chat_session`` …) use the service of the process's container
(``chatcore.container``); tests and other entry points build their own ``Container(settings)``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import JsonValue

from chatcore import branches
from chatcore.cache import SessionCache
from chatcore.dynamo.codecs import with_messages
from chatcore.errors import BadRequest, NotFound, TurnInProgress
from chatcore.models import ChatMessage, ChatSession, Feedback, Rating, is_valid_session_id
from chatcore.observability import count, count_by
from chatcore.store import SessionStore, TurnGuard

_CURSOR_MAX = 512
DELETED_VERSION = 2**53  # above any real version: no copy of a deleted session is cached again


@dataclass(frozen=True)
class SessionPage:
    sessions: list[ChatSession]
    next_cursor: str | None


@dataclass(frozen=True)
class MessagePage:
    messages: list[ChatMessage]
    next_cursor: str | None
    feedback: dict[str, Feedback]  # by turn id, for the answers on this page
    versions: dict[int, list[str]] = field(default_factory=dict)  # of the active path (``ChatSession.versions``)


def _encode_cursor(payload: dict[str, Any]) -> str:
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> dict[str, Any]:
    if len(cursor) > _CURSOR_MAX:
        raise BadRequest("invalid cursor")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        payload = json.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest("invalid cursor") from exc
    if not isinstance(payload, dict):
        raise BadRequest("invalid cursor")
    return payload


def _session_cursor(cursor: str) -> tuple[str, str]:
    payload = _decode_cursor(cursor)
    updated, sid = payload.get("u"), payload.get("s")
    if set(payload) != {"u", "s"} or not isinstance(updated, str) or not isinstance(sid, str):
        raise BadRequest("invalid cursor")
    if not is_valid_session_id(sid):
        raise BadRequest("invalid cursor")
    try:
        datetime.fromisoformat(updated)
    except ValueError as exc:
        raise BadRequest("invalid cursor") from exc
    return updated, sid


def _message_cursor(cursor: str) -> int:
    payload = _decode_cursor(cursor)
    after = payload.get("a")
    if set(payload) != {"a"} or type(after) is not int or not 0 <= after < 10**9:
        raise BadRequest("invalid cursor")
    return after


class SessionService:
    def __init__(
        self,
        store: SessionStore,
        cache: SessionCache,
        *,
        on_delete: Callable[[str], Awaitable[Any]] | None = None,
    ) -> None:
        self.store = store
        self.cache = cache
        self._on_delete = on_delete  # runs after the tombstone, before the sweep (stops running operations)

    async def aclose(self) -> None:
        await self.cache.close()

    # -- the design-document API ----------------------------------------------------------------------------

    async def get_chat_session(self, session_id: str, user_id: str | None = None) -> ChatSession | None:
        """The whole session, or None when it does not exist or ``user_id`` is given and is not the owner."""
        if not is_valid_session_id(session_id):
            return None
        session = await self._current(session_id)
        if session is None or (user_id is not None and session.user_id != user_id):
            return None
        return session

    async def _current(self, session_id: str) -> ChatSession | None:
        """The session as of this read or newer: the cached copy only when its version is not below META's, read
        consistently at the same time (Redis and DynamoDB concurrently), else DynamoDB's, cached for the next
        reader. A copy left behind by a write-through that failed is never served (README, "Cache (Redis)")."""
        if not self.cache.available():
            return await self.store.load(session_id)
        cached, meta = await asyncio.gather(self.cache.get(session_id), self.store.load_meta(session_id))
        if meta is None:
            return None
        if cached is not None and cached.version >= meta.version:
            return cached
        if cached is not None:
            count("CacheStale")
        return await self.load_through(session_id)

    async def get_session_meta(self, session_id: str, user_id: str) -> ChatSession | None:
        """The session without its messages (``usage`` empty, ``usage_totals`` right), read from META alone: one
        consistent read, so always current; None when missing, deleted or not ``user_id``'s."""
        meta = await self.store.load_meta(session_id) if is_valid_session_id(session_id) else None
        return meta if meta is not None and meta.user_id == user_id else None

    async def load_through(self, session_id: str) -> ChatSession | None:
        """The session from DynamoDB (a cache miss), cached for the next reader."""
        session = await self.store.load(session_id)
        if session is not None:
            await self.cache.put(session)
        return session

    async def working_set(self, session_id: str) -> ChatSession | None:
        """What a chat turn reads (any owner's: the caller checks), through the cache."""
        if not is_valid_session_id(session_id):
            return None
        cached, _ = await self.cache.get_working_set_with_user_context(session_id, None)
        return cached if cached is not None else await self.working_set_through(session_id)

    async def working_set_through(self, session_id: str) -> ChatSession | None:
        """The working set from DynamoDB (a cache miss), cached for the next turn."""
        working = await self.store.load_working_set(session_id)
        if working is not None:
            await self.cache.put_working_set(working)
        return working

    async def working_set_of(self, session_id: str, caller: str | None) -> ChatSession | None:
        """``working_set`` only when ``caller`` is exactly its owner; an anonymous caller (None) reaches only
        owner-less sessions. Unlike ``get_chat_session``, None here is a caller, not "skip the check"."""
        session = await self.working_set(session_id)
        return session if session is not None and session.user_id == caller else None

    async def load_working_set(self, session_id: str) -> ChatSession | None:
        """The working set from DynamoDB, never a cached copy."""
        return await self.store.load_working_set(session_id)

    async def upsert_chat_session(self, session: ChatSession, *, turn: TurnGuard | None = None) -> ChatSession:
        """Create the session or append its new messages / changed fields; returns the saved session.
        With ``turn``, the write succeeds only while that chat turn holds the session's lease."""
        saved = await self.store.save(session, turn=turn)
        if turn is not None and not turn.release:
            # Mid-turn write: the turn's last write caches the session; until then readers go to DynamoDB.
            await self.cache.invalidate(saved.session_id, version=saved.version)
        elif saved.partial:
            await self.cache.put_written(saved.working_set())  # the whole session's copy is dropped
        elif saved.is_complete():
            await self.cache.put_written(saved.working_set(), whole=saved)
        else:
            await self.cache.invalidate(saved.session_id, version=saved.version)
        return saved

    async def load_fresh(self, session_id: str) -> ChatSession | None:
        return await self.store.load(session_id)

    async def active_turn_id(self, session_id: str) -> str | None:
        meta = await self.store.load_meta(session_id)
        return meta.active_turn_id if meta else None

    async def set_summary(self, session_id: str, summary: str, seq: int) -> None:
        """Store the context summary; the cached copies are invalidated (META's version moved)."""
        meta = await self.store.set_summary(session_id, summary, seq)
        if meta is not None:
            await self.cache.invalidate(session_id, version=meta.version)

    async def replace_pending(self, session_id: str, seq: int, message: ChatMessage) -> int | None:
        """Replace a pending tool message with its result (see ``SessionStore.replace_pending``); the cached
        copy is invalidated. Returns the new version, or None when nothing was replaced."""
        version = await self.store.replace_pending(session_id, seq, message)
        if version is not None:
            await self.cache.invalidate(session_id, version=version)
        return version

    async def replace_placeholder(
        self, session_id: str, seq: int, message: ChatMessage, *, waiting: tuple[str, str]
    ) -> int | None:
        """Replace a placeholder (an approval's, see ``SessionStore.replace_placeholder``); the cached copy is
        invalidated. Returns the new version, or None when nothing was replaced."""
        version = await self.store.replace_placeholder(session_id, seq, message, waiting=waiting)
        if version is not None:
            await self.cache.invalidate(session_id, version=version)
        return version

    async def invalidate_session_cache(self, session_id: str) -> None:
        await self.cache.invalidate(session_id)

    async def update_session_title(self, session_id: str, title: str, user_id: str | None = None) -> ChatSession | None:
        return await self.update_session(session_id, {"title": title}, user_id=user_id)

    async def propose_title(self, session_id: str, title: str) -> ChatSession | None:
        """A generated title: stored unless the user has named the session (their rename always wins)."""
        meta = await self.store.propose_title(session_id, title)
        if meta is not None:
            await self.cache.invalidate(session_id, version=meta.version)
        return meta

    async def assign_user_to_session(self, session_id: str, user_id: str) -> ChatSession | None:
        """Claim an anonymous session for ``user_id``. Never takes over a session someone else owns:
        returns None then (and when the session does not exist)."""
        meta = await self.store.assign_owner(session_id, user_id)
        if meta is not None:
            await self.cache.invalidate(session_id, version=meta.version)
        return meta

    # -- CRUD for the HTTP API ------------------------------------------------------------------------------

    async def create_session(
        self,
        user_id: str,
        *,
        title: str = "",
        chat_type: str = "chat",
        metadata: dict[str, JsonValue] | None = None,
    ) -> ChatSession:
        session = ChatSession.new(user_id, title=title, chat_type=chat_type, metadata=metadata)
        return await self.upsert_chat_session(session)

    async def update_session(
        self, session_id: str, changes: dict[str, Any], *, user_id: str | None = None
    ) -> ChatSession | None:
        """Apply field changes (title, chat_type, status, metadata); None if not found for ``user_id``."""
        meta = await self.store.update_fields(session_id, changes, owner=user_id)
        if meta is not None:
            await self.cache.invalidate(session_id, version=meta.version)
        return meta

    async def list_sessions(
        self,
        user_id: str,
        *,
        limit: int = 20,
        cursor: str | None = None,
        status: str | None = None,
        chat_type: str | None = None,
    ) -> SessionPage:
        start_after = _session_cursor(cursor) if cursor else None
        sessions, last = await self.store.list_for_user(
            user_id, limit=limit, start_after=start_after, status=status, chat_type=chat_type
        )
        next_cursor = _encode_cursor({"u": last[0], "s": last[1]}) if last else None
        return SessionPage(sessions, next_cursor)

    async def list_messages(
        self,
        session_id: str,
        user_id: str,
        *,
        limit: int = 50,
        cursor: str | None = None,
        branch: Literal["active", "all"] = "active",
    ) -> MessagePage:
        """A page of the active path (root first), or with ``branch="all"`` of every message of every branch
        (by seq, each naming its parent)."""
        after = _message_cursor(cursor) if cursor else 0
        session = await self.get_chat_session(session_id, user_id)
        if session is None:
            raise NotFound("session not found")
        messages = session.messages if branch == "active" else (await self._tree(session_id, user_id))[1]
        page = messages[after : after + limit]
        end = after + len(page)
        next_cursor = _encode_cursor({"a": end}) if end < len(messages) else None
        answers = [m.turn_id for m in page if m.role == "assistant" and m.turn_id]
        feedback = await self.store.feedback_of(session_id, answers)
        return MessagePage(page, next_cursor, feedback, session.versions if branch == "active" else {})

    # -- branches (regenerate and edit add versions; chatcore.branches) ------------------------------------------

    async def versions(self, session_id: str, user_id: str, ref: str) -> tuple[list[ChatMessage], int]:
        """The versions of the message ``ref`` names (``chatcore.branches.find``), oldest first, and the index
        of the one on the active path (-1 when none is)."""
        messages, path, message = await self._find(session_id, user_id, ref)
        found = branches.versions(messages, message)
        active = {m.seq for m in path}
        return found, next((i for i, m in enumerate(found) if m.seq in active), -1)

    async def switch_branch(self, session_id: str, user_id: str, ref: str) -> ChatSession:
        """Make the version ``ref`` names active: the newest leaf under it becomes the session's active leaf.
        Refused (409) while a reply is being generated."""
        messages, _, message = await self._find(session_id, user_id, ref)
        meta = await self.store.set_leaf(session_id, branches.newest_leaf(messages, message), owner=user_id)
        if meta is None:
            now = await self.store.load_meta(session_id)
            if now is None or now.user_id != user_id:
                raise NotFound("session not found")
            raise TurnInProgress("a reply is being generated in this session; switch when it has finished")
        await self.cache.invalidate(session_id, version=meta.version)
        return meta

    async def _find(
        self, session_id: str, user_id: str, ref: str
    ) -> tuple[list[ChatMessage], list[ChatMessage], ChatMessage]:
        """Every stored message, the active path, and the message ``ref`` names (``chatcore.branches.find``)."""
        session, messages = await self._tree(session_id, user_id)
        path = with_messages(session, messages).messages
        message = branches.find(messages, ref, path)
        if message is None:
            raise NotFound("message not found")
        return messages, path, message

    async def _tree(self, session_id: str, user_id: str | None) -> tuple[ChatSession, list[ChatMessage]]:
        found = await self.store.load_tree(session_id) if is_valid_session_id(session_id) else None
        if found is None or found[0].user_id != user_id:
            raise NotFound("session not found")
        return found

    async def set_feedback(
        self, session_id: str, user_id: str, turn_id: str, rating: Rating, comment: str | None
    ) -> Feedback:
        """Rate the answer ``turn_id`` of the caller's session (replacing an earlier rating of it); ``NotFound``
        for another user's session or an id that is no answer of this session."""
        await self._answer_of(session_id, user_id, turn_id)
        feedback = Feedback(turn_id=turn_id, rating=rating, comment=comment)
        await self.store.put_feedback(session_id, feedback, owner=user_id)
        count_by("Feedback", "rating", rating)
        return feedback

    async def delete_feedback(self, session_id: str, user_id: str, turn_id: str) -> None:
        """Remove the caller's rating of the answer ``turn_id``; ``NotFound`` when there is none."""
        await self._answer_of(session_id, user_id, turn_id)
        if not await self.store.delete_feedback(session_id, turn_id):
            raise NotFound("no feedback for this message")

    async def _answer_of(self, session_id: str, user_id: str, turn_id: str) -> None:
        # The answers rated are mostly recent ones: the working set first, the whole path when it misses older ones.
        session = await self.working_set_of(session_id, user_id)
        if session is not None and session.misses_older() and not _answers(session, turn_id):
            session = await self.get_chat_session(session_id, user_id)
        if session is None:
            raise NotFound("session not found")
        if not _answers(session, turn_id):
            raise NotFound("no such answer in this session")

    async def delete_session(self, session_id: str, user_id: str | None = None) -> bool:
        """Delete the session and every item of it; False when it does not exist for ``user_id``."""
        if not is_valid_session_id(session_id):
            return False
        deleted = await self.store.delete(session_id, owner=user_id, before_sweep=self._on_delete)
        if deleted:
            # A reader that loaded the session just before the delete must not cache it afterwards.
            await self.cache.invalidate(session_id, version=DELETED_VERSION)
        return deleted

    async def delete_sessions(self, session_ids: list[str], user_id: str) -> tuple[list[str], list[str]]:
        """Delete several sessions (each with the full cascade); returns (deleted, not_found)."""
        deleted: list[str] = []
        missing: list[str] = []
        for session_id in dict.fromkeys(session_ids):
            (deleted if await self.delete_session(session_id, user_id) else missing).append(session_id)
        return deleted, missing


def _answers(session: ChatSession, turn_id: str) -> bool:
    return any(m.role == "assistant" and m.turn_id == turn_id for m in session.messages)


class SessionLeases:
    """The turn lease on META (``chatcore.ports.TurnLeases``): a release also drops the cached copy, whose
    ``active_turn`` it changed."""

    def __init__(self, store: SessionStore, cache: SessionCache) -> None:
        self.store = store
        self.cache = cache

    async def take(self, session: ChatSession, turn_id: str, *, owner: str | None, lease_seconds: int) -> ChatSession:
        meta = await self.store.acquire_turn(session.session_id, turn_id, owner=owner, lease_seconds=lease_seconds)
        if meta.version != session.version + 1:  # written since it was read, or read from a stale cached copy
            # Read again in the shape it was read: a turn's working set, or the whole path.
            fresh = await (self.store.load_working_set if session.partial else self.store.load)(session.session_id)
            if fresh is None:
                raise NotFound("session not found")
            session = fresh
        session.version, session.active_turn_id = meta.version, turn_id
        return session

    async def release(self, session_id: str, turn_id: str) -> None:
        meta = await self.store.release_turn(session_id, turn_id)
        if meta is not None:
            await self.cache.invalidate(session_id, version=meta.version)

    async def renew(self, session_id: str, turn_id: str, *, lease_seconds: int) -> bool:
        return await self.store.renew_turn(session_id, turn_id, lease_seconds=lease_seconds)

    async def take_lapsed(
        self, session_id: str, turn_id: str, closer_id: str, *, lease_seconds: int
    ) -> ChatSession | None:
        meta = await self.store.take_lapsed_turn(session_id, turn_id, closer_id, lease_seconds=lease_seconds)
        if meta is None:
            return None
        session = await self.store.load(session_id)
        if session is None:
            return None
        session.version, session.active_turn_id = meta.version, closer_id
        return session


def default_service() -> SessionService:
    """The sessions of this process's container (``chatcore.container.default_container``)."""
    from chatcore.container import default_container  # the container wires this module: imported at call time

    return default_container().sessions


async def get_chat_session(session_id: str, user_id: str | None = None) -> ChatSession | None:
    return await default_service().get_chat_session(session_id, user_id)


async def upsert_chat_session(session: ChatSession) -> ChatSession:
    return await default_service().upsert_chat_session(session)


async def invalidate_session_cache(session_id: str) -> None:
    await default_service().invalidate_session_cache(session_id)


async def update_session_title(session_id: str, title: str, user_id: str | None = None) -> ChatSession | None:
    return await default_service().update_session_title(session_id, title, user_id)


async def assign_user_to_session(session_id: str, user_id: str) -> ChatSession | None:
    return await default_service().assign_user_to_session(session_id, user_id)
