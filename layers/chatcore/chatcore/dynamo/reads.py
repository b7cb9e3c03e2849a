"""Reads of sessions: META alone, the session with its active path, a turn's working set (the recent part of the
active path), every branch, a user's sessions newest first."""

from __future__ import annotations

import asyncio
import itertools
from contextlib import aclosing
from typing import get_args

from chatcore.dynamo.codecs import decode_message, decode_meta, with_messages
from chatcore.dynamo.expressions import Expression
from chatcore.dynamo.keys import (
    BY_USER_INDEX,
    BY_USER_STATUS_INDEX,
    BY_USER_TYPE_INDEX,
    META,
    MSG_END,
    Item,
    by_status_pk,
    by_type_pk,
    by_user_sk,
    meta_key,
    msg_sk,
    pk,
    s_attr,
    user_pk,
)
from chatcore.dynamo.table import Table
from chatcore.errors import ServiceUnavailable
from chatcore.models import ChatMessage, ChatSession, SessionStatus, usage_of

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
    """Sessions of ``user_id`` newest first, of that ``status`` and ``chat_type`` when given; ``start_after`` and
    the returned cursor are ``(updated_at_iso, session_id)`` of the last session of a page (None after a page
    that is not full). Each filter has its index (``keys.BY_USER_*``, one sort key): a page reads the sessions
    it returns, and a chat type alone the newest ``limit`` of each status, merged."""
    if chat_type and not status:
        partitions = [
            (BY_USER_TYPE_INDEX, "GSI3PK", by_type_pk(user_id, chat_type, s)) for s in get_args(SessionStatus)
        ]
    elif chat_type and status:
        partitions = [(BY_USER_TYPE_INDEX, "GSI3PK", by_type_pk(user_id, chat_type, status))]
    elif status:
        partitions = [(BY_USER_STATUS_INDEX, "GSI2PK", by_status_pk(user_id, status))]
    else:
        partitions = [(BY_USER_INDEX, "GSI1PK", user_pk(user_id))]
    found = await asyncio.gather(*(_newest(table, *p, limit=limit, start_after=start_after) for p in partitions))
    # A status change reaches the index a moment later: until then a session may be under both statuses.
    merged = {item["GSI1SK"]["S"]: item for item in itertools.chain(*found)}
    items = [merged[k] for k in sorted(merged, reverse=True)[:limit]]
    if not items or (len(items) < limit and all(len(f) < limit for f in found)):
        return [decode_meta(item) for item in items], None
    updated, _, sid = items[-1]["GSI1SK"]["S"].partition("#")  # an ISO time holds no '#'
    return [decode_meta(item) for item in items], (updated, sid)


async def _newest(
    table: Table, index: str, attribute: str, partition: str, *, limit: int, start_after: Cursor | None
) -> list[Item]:
    """Up to ``limit`` items of one index partition, newest first, after the cursor (a key condition: the
    cursor's session may have moved since, its position has not)."""
    ex = Expression()
    ex.key(ex.eq(attribute, s_attr(partition)))
    if start_after:
        ex.key(f"{ex.name('GSI1SK')} < {ex.value(s_attr(by_user_sk(*start_after)))}")
    items: list[Item] = []
    async with aclosing(table.pages(ex, IndexName=index, ScanIndexForward=False, Limit=limit)) as pages:
        async for page in pages:  # one page, unless a page's 1 MB ended it first
            items.extend(page.get("Items", []))
            if len(items) >= limit:
                break
    return items[:limit]
