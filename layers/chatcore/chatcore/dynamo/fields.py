"""Updates of META's fields: title / chat_type / status / metadata, the owner, the context summary."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

from chatcore.dynamo.codecs import decode_meta, field_value, iso
from chatcore.dynamo.expressions import Expression
from chatcore.dynamo.keys import SESSION_ALIVE, by_user_sk, filter_keys, meta_key, n_attr, s_attr, user_pk
from chatcore.dynamo.reads import load_meta
from chatcore.dynamo.table import Table
from chatcore.errors import ConcurrentWriteError
from chatcore.models import ChatSession, utcnow

# The title the user gave (a rename). A generated title is written as ``if_not_exists(user_title, generated)``, so
# a rename made while the first answer was being generated is never replaced by the generated title.
USER_TITLE = "user_title"
LISTED_FIELDS = frozenset({"chat_type", "status"})  # fields the filtered indexes' keys are made of
MAX_ATTEMPTS = 8


async def update_meta(table: Table, session_id: str, ex: Expression) -> ChatSession | None:
    """Apply ``ex`` to META (the version is bumped); the updated session, or None when a condition failed."""
    ex.increment("version")
    item = await table.update_if(meta_key(session_id), ex, ReturnValues="ALL_NEW")
    return None if item is None else decode_meta(item)


async def update_fields(
    table: Table, session_id: str, changes: dict[str, Any], *, owner: str | None = None
) -> ChatSession | None:
    """Set META fields (title, chat_type, status, metadata); None when missing, deleted or not ``owner``'s."""

    def build(meta: ChatSession | None) -> Expression | None:
        if meta is not None and owner is not None and meta.user_id != owner:
            return None
        ex = Expression()
        for field, value in changes.items():
            ex.set(field, field_value(field, value))
            if field == "title":
                ex.set(USER_TITLE, field_value(field, value))
        if meta is not None and meta.user_id:
            chat_type, status = str(changes.get("chat_type", meta.chat_type)), str(changes.get("status", meta.status))
            for attribute, value in filter_keys(meta.user_id, chat_type, status).items():
                ex.set(attribute, value)
        ex.require(SESSION_ALIVE)
        if owner is not None:
            ex.require(ex.eq("user_id", s_attr(owner)))
        return ex

    if LISTED_FIELDS.isdisjoint(changes):
        unlisted = build(None)
        assert unlisted is not None
        return await update_meta(table, session_id, unlisted)
    return await _update_as_read(table, session_id, build)


async def assign_owner(table: Table, session_id: str, user_id: str) -> ChatSession | None:
    """Give an anonymous session to ``user_id``; None if missing, deleted or owned by someone else."""

    def build(meta: ChatSession | None) -> Expression | None:
        if meta is None or meta.user_id not in (None, user_id):
            return None
        ex = Expression()
        owner = ex.value(s_attr(user_id))
        ex.set("GSI1PK", s_attr(user_pk(user_id))).set("GSI1SK", s_attr(by_user_sk(iso(utcnow()), session_id)))
        for attribute, value in filter_keys(user_id, meta.chat_type, meta.status).items():
            ex.set(attribute, value)
        unowned = f"attribute_not_exists({ex.name('user_id')})"
        ex.require(SESSION_ALIVE, f"({unowned} OR {ex.name('user_id')} = {owner})")
        ex.set("user_id", s_attr(user_id))
        return ex

    return await _update_as_read(table, session_id, build)


async def _update_as_read(
    table: Table, session_id: str, build: Callable[[ChatSession | None], Expression | None]
) -> ChatSession | None:
    """Apply the update ``build`` makes from META as read now, while META is still at that version. For a write
    that changes a filtered index's key, made of fields the write itself may not know (a status change needs the
    chat type): read, write under a version guard, read again after a race. None when META is missing or
    deleted or ``build`` refuses (returns None)."""
    for attempt in range(MAX_ATTEMPTS):
        meta = await load_meta(table, session_id)
        ex = None if meta is None else build(meta)
        if meta is None or ex is None:
            return None
        ex.require(ex.eq("version", n_attr(meta.version)))
        updated = await update_meta(table, session_id, ex)
        if updated is not None:
            return updated
        await asyncio.sleep(random.uniform(0, min(0.2, 0.005 * 2**attempt)))  # noqa: S311 - jitter
    raise ConcurrentWriteError("too many concurrent writers on this session; try again")


async def set_summary(table: Table, session_id: str, summary: str, seq: int) -> ChatSession | None:
    """Store the context summary of the path from the root to message ``seq``. It replaces any other: with
    branches, a summary covering a higher seq may cover another path, and the turn that made this one is the
    session's only writer (it holds the lease)."""
    ex = Expression()
    ex.set("summary", s_attr(summary)).set("summary_seq", n_attr(seq))
    ex.require(SESSION_ALIVE)
    return await update_meta(table, session_id, ex)


async def set_leaf(table: Table, session_id: str, leaf_seq: int, *, owner: str | None) -> ChatSession | None:
    """Make ``leaf_seq`` the active leaf (switching branches); None when the session is missing, deleted, not
    ``owner``'s, the message does not exist, or a turn holds the lease (the caller tells which)."""
    ex = Expression()
    ex.set("leaf_seq", n_attr(leaf_seq))
    held_by, expires = ex.name("active_turn_id"), ex.name("active_turn_expires")
    now = ex.value(n_attr(int(utcnow().timestamp())))
    ex.require(
        SESSION_ALIVE,
        f"{ex.name('message_count')} >= {ex.value(n_attr(leaf_seq))}",
        f"(attribute_not_exists({held_by}) OR {expires} < {now})",
    )
    if owner is not None:
        ex.require(ex.eq("user_id", s_attr(owner)))
    return await update_meta(table, session_id, ex)


async def propose_title(table: Table, session_id: str, title: str) -> ChatSession | None:
    """A generated title, unless the user named the session; None when the session is missing or deleted."""
    ex = Expression().set_unless("title", USER_TITLE, field_value("title", title))
    ex.require(SESSION_ALIVE)
    return await update_meta(table, session_id, ex)
