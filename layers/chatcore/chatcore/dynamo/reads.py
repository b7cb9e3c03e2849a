"""Reads of sessions: META alone, the session with its active path, a turn's working set (the recent part of the
active path), every branch, a user's sessions newest first."""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from typing import Any

from chatcore.dynamo.codecs import decode_message, decode_meta, iso, with_messages
from chatcore.dynamo.expressions import Expression
from chatcore.dynamo.keys import BY_USER_INDEX, META, MSG_END, by_user_sk, meta_key, msg_sk, pk, s_attr, user_pk
from chatcore.dynamo.table import Table
from chatcore.errors import ServiceUnavailable
from chatcore.models import ChatMessage, ChatSession, usage_of

Cursor = tuple[str, str]  # (updated_at iso, session_id) of the last session of a page
WORKING_PAGE = 50  # messages one working-set query asks for where no summary bounds the range
MAX_WORKING_PAGE = 500


async def load_meta(table: Table, session_id: str) -> ChatSession | None:
    """The session without its messages (``usage`` empty, ``usage_totals`` right), or None when missing or
    deleted."""
    item = await table.get(meta_key(session_id))
    if not item or "deleted_at" in item:
        return None
    return decode_meta(item)


async def load(table: Table, session_id: str) -> ChatSession | None:
    """The session with its active path, paging through any number of messages; None when missing or deleted."""
    found = await load_tree(table, session_id)
    return None if found is None else with_messages(*found)


async def load_tree(table: Table, session_id: str) -> tuple[ChatSession, list[ChatMessage]] | None:
    """META and every stored message of every branch, by seq; None when missing or deleted."""
    for _attempt in range(5):
        items = await table.query(_session_items(session_id))
        if not items or items[0]["SK"]["S"] != META or "deleted_at" in items[0]:
            return None
        session = decode_meta(items[0])
        messages = [decode_message(item) for item in items[1:]][: session.message_count]
        # A query is not isolated from a concurrent transaction: META may count a message the query
        # did not see yet. Read again rather than return a history with a hole.
        if len(messages) == session.message_count:
            return session, messages
        await asyncio.sleep(0.01)
    raise ServiceUnavailable("session kept changing while it was read")


async def load_working_set(table: Table, session_id: str) -> ChatSession | None:
    """What a turn reads (``ChatSession.working_set``, marked ``partial``): META, then the active path newest
    first from the leaf to the stored summary's message when it is on the path, else to the root — never the
    rest of the partition. None when missing or deleted.

    The summary is made again as soon as the history after it outgrows the context budget (``chatcore.context``),
    so what is read is bounded by that budget plus one turn, whatever the conversation's length. Each query asks
    for a key range ending at the next message of the path (seqs are dense): other branches' messages between
    two messages of the path are skipped by key, not read.
    """
    for _attempt in range(5):
        item = await table.get(meta_key(session_id))
        if not item or "deleted_at" in item:
            return None
        session = decode_meta(item)
        path = await _recent_path(table, session)
        if path is not None:
            session.messages, session.partial, session.usage = path, True, usage_of(path)
            session.mark_clean()
            return session
        await asyncio.sleep(0.01)  # a message META counts was not visible yet (see ``load_tree``)
    raise ServiceUnavailable("session kept changing while it was read")


async def _recent_path(table: Table, session: ChatSession) -> list[ChatMessage] | None:
    """The active path from the summary's message (or the root) to the leaf; None when a message of it was not
    visible yet."""
    summary = session.summary_seq if session.context_summary else 0
    newest_first: list[ChatMessage] = []
    needed = session.leaf_seq
    while needed:
        low = summary if 0 < summary <= needed else max(1, needed - WORKING_PAGE + 1)
        options = {"ScanIndexForward": False, "Limit": min(needed - low + 1, MAX_WORKING_PAGE), "ConsistentRead": True}
        async with aclosing(table.pages(_message_range(session.session_id, low, needed), **options)) as pages:
            items = (await anext(pages)).get("Items", [])
        if not items:
            return None
        for item in items:
            seq = int(item["seq"]["N"])
            if seq > needed:  # another branch's
                continue
            if seq < needed:
                return None
            message = decode_message(item)
            newest_first.append(message)
            needed = 0 if seq == summary else message.parent_seq or 0
            if not needed:
                break
    newest_first.reverse()
    return newest_first


def _message_range(session_id: str, low: int, high: int) -> Expression:
    ex = Expression()
    between = f"{ex.name('SK')} BETWEEN {ex.value(s_attr(msg_sk(low)))} AND {ex.value(s_attr(msg_sk(high)))}"
    return ex.key(ex.eq("PK", s_attr(pk(session_id))), between)


def _session_items(session_id: str) -> Expression:
    """META and every message of the session (they sort together: ``META`` < ``MSG#...`` < ``MSG#~``)."""
    ex = Expression()
    between = f"{ex.name('SK')} BETWEEN {ex.value(s_attr(META))} AND {ex.value(s_attr(MSG_END))}"
    return ex.key(ex.eq("PK", s_attr(pk(session_id))), between)


async def list_for_user(
    table: Table,
    user_id: str,
    *,
    limit: int,
    start_after: Cursor | None = None,
    status: str | None = None,
    chat_type: str | None = None,
) -> tuple[list[ChatSession], Cursor | None]:
    """Sessions of ``user_id`` newest first; ``start_after`` and the returned cursor are
    ``(updated_at_iso, session_id)`` of the last session of a page."""
    ex = Expression()
    ex.key(ex.eq("GSI1PK", s_attr(user_pk(user_id))))
    if status:
        ex.filter(ex.eq("status", s_attr(status)))
    if chat_type:
        ex.filter(ex.eq("chat_type", s_attr(chat_type)))
    options: dict[str, Any] = {"IndexName": BY_USER_INDEX, "ScanIndexForward": False, "Limit": limit}
    if start_after:
        updated, sid = start_after
        options["ExclusiveStartKey"] = {
            **meta_key(sid),
            "GSI1PK": s_attr(user_pk(user_id)),
            "GSI1SK": s_attr(by_user_sk(updated, sid)),
        }
    sessions: list[ChatSession] = []
    async with aclosing(table.pages(ex, **options)) as pages:
        async for page in pages:
            for item in page.get("Items", []):
                sessions.append(decode_meta(item))
                if len(sessions) == limit:
                    tail = sessions[-1]
                    return sessions, (iso(tail.updated_at), tail.session_id)
    return sessions, None
