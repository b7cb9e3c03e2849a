"""Updates of META's fields: title / chat_type / status / metadata, the owner, the context summary."""

from __future__ import annotations

from typing import Any

from chatcore.dynamo.codecs import decode_meta, field_value, iso
from chatcore.dynamo.expressions import Expression
from chatcore.dynamo.keys import SESSION_ALIVE, by_user_sk, meta_key, n_attr, s_attr, user_pk
from chatcore.dynamo.table import Table
from chatcore.models import ChatSession, utcnow

# The title the user gave (a rename). A generated title is written as ``if_not_exists(user_title, generated)``, so
# a rename made while the first answer was being generated is never replaced by the generated title.
USER_TITLE = "user_title"


async def update_meta(table: Table, session_id: str, ex: Expression) -> ChatSession | None:
    """Apply ``ex`` to META (the version is bumped); the updated session, or None when a condition failed."""
    ex.increment("version")
    item = await table.update_if(meta_key(session_id), ex, ReturnValues="ALL_NEW")
    return None if item is None else decode_meta(item)


async def update_fields(
    table: Table, session_id: str, changes: dict[str, Any], *, owner: str | None = None
) -> ChatSession | None:
    """Set META fields (title, chat_type, status, metadata); None when missing, deleted or not ``owner``'s."""
    ex = Expression()
    for field, value in changes.items():
        ex.set(field, field_value(field, value))
        if field == "title":
            ex.set(USER_TITLE, field_value(field, value))
    ex.require(SESSION_ALIVE)
    if owner is not None:
        ex.require(ex.eq("user_id", s_attr(owner)))
    return await update_meta(table, session_id, ex)


async def assign_owner(table: Table, session_id: str, user_id: str) -> ChatSession | None:
    """Give an anonymous session to ``user_id``; None if missing, deleted or owned by someone else."""
    ex = Expression()
    owner = ex.value(s_attr(user_id))
    ex.set("GSI1PK", s_attr(user_pk(user_id))).set("GSI1SK", s_attr(by_user_sk(iso(utcnow()), session_id)))
    unowned = f"attribute_not_exists({ex.name('user_id')})"
    ex.require(SESSION_ALIVE, f"({unowned} OR {ex.name('user_id')} = {owner})")
    ex.set("user_id", s_attr(user_id))
    return await update_meta(table, session_id, ex)


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
