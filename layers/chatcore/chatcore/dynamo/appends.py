"""Saving a session: create it, or append its new messages and changed fields, in conditional transactions.

A transaction holds META (created with ``attribute_not_exists``, or updated guarded by the expected ``version``
and, for a chat turn, its lease) plus one item per message and one per client message id (both
``attribute_not_exists``). A lost race (or a throttled transaction) reloads META and retries with jittered
backoff; a deleted session fails with ``NotFound`` instead of being recreated; a client message id already stored
fails with ``DuplicateClientMessage``.

Branches: each message names its parent (``parent_seq``). A message written without one follows the message
before it in the same write, the first one follows META's ``leaf_seq`` *as of the write that succeeds* (so
concurrent appenders chain instead of forking); a writer that branches on purpose (regenerate, edit) sets it.
Every append makes its last message the active leaf.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from chatcore.dynamo import reads
from chatcore.dynamo.codecs import (
    encode_message,
    encode_meta,
    field_value,
    iso,
    message_body,
    usage_values,
    waiting_attributes,
)
from chatcore.dynamo.expressions import Expression
from chatcore.dynamo.fields import USER_TITLE
from chatcore.dynamo.keys import (
    ABSENT,
    SESSION_ALIVE,
    Item,
    by_user_sk,
    cmid_key,
    filter_keys,
    meta_key,
    msg_key,
    n_attr,
    s_attr,
)
from chatcore.dynamo.leases import TurnGuard, hold
from chatcore.dynamo.table import Table
from chatcore.errors import ConcurrentWriteError, Conflict, DuplicateClientMessage, NotFound, ServiceRefused, TurnLost
from chatcore.models import ChatMessage, ChatSession, Usage, client_key, usage_of, utcnow

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import TransactWriteItemTypeDef

# One transaction holds at most 100 items: META plus up to 2 items (message + client id) per message.
MESSAGES_PER_TRANSACTION = 49
MAX_WRITE_ATTEMPTS = 40
# A lost race (META's condition, a conflicting transaction), or a throttled item: DynamoDB reports a throttled
# transaction as cancelled with ``ThrottlingError``, which botocore does not retry.
RETRYABLE_REASONS = frozenset({"None", "ConditionalCheckFailed", "TransactionConflict", "ThrottlingError"})


async def save(table: Table, session: ChatSession, *, turn: TurnGuard | None = None) -> ChatSession:
    """Create the session or append its unsaved messages (``seq is None``) and changed fields.

    Returns the stored state: seqs assigned, counters, version and usage updated. When another writer got in
    first, or the write started a new branch, the session is reloaded from the table so the result is never a
    partial picture. With ``turn``, the write only succeeds while that turn holds the session's lease (and may
    release it).
    """
    new_messages = [message for message in session.messages if message.seq is None]
    # A new branch, or a generated title the user's own may have overruled: read back what was written.
    read_back = any(message.parent_seq is not None for message in new_messages) or session.title_proposed
    if session.version == 0:
        await _create(table, session, new_messages[:MESSAGES_PER_TRANSACTION])
        new_messages = new_messages[MESSAGES_PER_TRANSACTION:]
        if not new_messages:
            return session
    raced = False
    while True:
        chunk = new_messages[:MESSAGES_PER_TRANSACTION]
        last = len(new_messages) <= MESSAGES_PER_TRANSACTION
        raced |= await _append(table, session, chunk, turn if last else (turn and turn.keep()))
        new_messages = new_messages[MESSAGES_PER_TRANSACTION:]
        if not new_messages:
            break
    if raced or read_back:
        # In the shape it was given: a turn's working set stays one (its cost does not grow with the session).
        load = reads.load_working_set if session.partial else reads.load
        fresh = await load(table, session.session_id)
        if fresh is None:
            raise NotFound("session was deleted")
        return fresh
    return session


async def _create(table: Table, session: ChatSession, messages: list[ChatMessage]) -> None:
    now = utcnow()
    session.created_at = session.updated_at = now
    meta = encode_meta(session, now, messages)
    if expires := table.session_expiry(now):
        meta["expires_at"] = expires
    parents = _parents(messages, 0, 1)
    items = [
        table.put_item(meta, condition=ABSENT),
        *_message_items(table, session.session_id, messages, parents, 1, now),
    ]
    try:
        await table.transact(items)
    except ServiceRefused as exc:
        if exc.reasons and exc.reasons[0] == "ConditionalCheckFailed":
            raise Conflict("a session with this id exists or was deleted") from exc
        if exc.condition_failed:
            await _raise_duplicate(table, session.session_id, messages, exc)
        raise
    for seq, (message, parent) in enumerate(zip(messages, parents, strict=True), start=1):
        message.seq, message.parent_seq = seq, parent
    session.message_count = session.leaf_seq = len(messages)
    session.version = 1
    session.usage = usage_of(session.messages)
    session.usage_totals = Usage.total(usage_of(messages))
    session.mark_clean()


async def _append(table: Table, session: ChatSession, messages: list[ChatMessage], turn: TurnGuard | None) -> bool:
    """Append ``messages`` and write changed fields; returns True when it had to retry after a race."""
    expected_version, first_seq, leaf = session.version, session.message_count + 1, session.leaf_seq
    listed = (session.chat_type, session.status)  # what META holds after this write: the filtered indexes' keys
    raced = False
    throttled = _Throttled(turn.throttle_seconds if turn is not None else 0.0)
    for attempt in range(MAX_WRITE_ATTEMPTS):
        now = utcnow()
        parents = _parents(messages, leaf, first_seq)
        try:
            await table.transact(
                _append_items(table, session, messages, parents, expected_version, first_seq, now, turn, listed)
            )
        except ServiceRefused as exc:
            if exc.throttled and await throttled.wait():
                continue  # refused for its rate: nothing applied, the same items go again
            if not exc.cancelled:
                raise
            await _raise_duplicate(table, session.session_id, messages, exc)
            if not RETRYABLE_REASONS.issuperset(exc.reasons):
                raise
            fresh = await reads.load_meta(table, session.session_id)
            if fresh is None:
                raise NotFound("session was deleted") from exc
            if turn is not None and fresh.active_turn_id != turn.turn_id:
                raise TurnLost("this turn no longer holds the session's lease") from exc
            expected_version, first_seq, leaf = fresh.version, fresh.message_count + 1, fresh.leaf_seq
            changed = session.changed_fields()
            listed = (changed.get("chat_type", fresh.chat_type), changed.get("status", fresh.status))
            raced = True
            await asyncio.sleep(random.uniform(0, min(0.2, 0.005 * 2**attempt)))  # noqa: S311 - jitter
            continue
        for offset, (message, parent) in enumerate(zip(messages, parents, strict=True)):
            message.seq, message.parent_seq = first_seq + offset, parent
        session.message_count = first_seq + len(messages) - 1
        if messages:
            session.leaf_seq = session.message_count
        session.version = expected_version + 1
        session.updated_at = now
        session.usage = usage_of(session.messages)
        session.usage_totals = session.usage_totals + Usage.total(usage_of(messages))
        if turn is not None and turn.release:
            session.active_turn_id = None
        session.mark_clean()
        return raced
    raise ConcurrentWriteError("too many concurrent writers on this session; try again")


class _Throttled:
    """The wait before a throttled transaction is sent again, within ``seconds`` from the first refusal (botocore's
    own backoff came before it); False when that time is spent."""

    FIRST_DELAY, LONGEST_DELAY = 0.2, 2.0

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._until: float | None = None
        self._delay = self.FIRST_DELAY

    async def wait(self) -> bool:
        now = asyncio.get_running_loop().time()
        if self._until is None:
            self._until = now + self._seconds
        if now + self._delay > self._until:
            return False
        await asyncio.sleep(random.uniform(self._delay / 2, self._delay))  # noqa: S311 - jitter
        self._delay = min(2 * self._delay, self.LONGEST_DELAY)
        return True


def _parents(messages: Sequence[ChatMessage], leaf: int, first_seq: int) -> list[int]:
    """Each message's parent: its own when set, else the message before it (the leaf for the first)."""
    parents: list[int] = []
    for seq, message in enumerate(messages, start=first_seq):
        parents.append(message.parent_seq if message.parent_seq is not None else (seq - 1 if parents else leaf))
    return parents


def _append_items(
    table: Table,
    session: ChatSession,
    messages: list[ChatMessage],
    parents: list[int],
    expected_version: int,
    first_seq: int,
    now: datetime,
    turn: TurnGuard | None,
    listed: tuple[str, str],
) -> list[TransactWriteItemTypeDef]:
    """The transaction's items. ``listed`` is the (chat type, status) META holds after the write: the filtered
    indexes' keys are written with every append, so a session stored before those indexes existed joins them."""
    ex = Expression().increment("version")
    ex.set("message_count", n_attr(first_seq - 1 + len(messages))).set("updated_at", s_attr(iso(now)))
    if messages:
        ex.set("leaf_seq", n_attr(first_seq - 1 + len(messages)))
    if session.user_id:
        ex.set("GSI1SK", s_attr(by_user_sk(iso(now), session.session_id)))
        for attribute, value in filter_keys(session.user_id, *listed).items():
            ex.set(attribute, value)
    for field, value in session.changed_fields().items():
        if field == "title" and session.title_proposed:
            ex.set_unless("title", USER_TITLE, field_value(field, value))
        else:
            ex.set(field, field_value(field, value))
    if expires := table.session_expiry(now):
        ex.set("expires_at", expires)
    for attribute, count in usage_values(Usage.total(usage_of(messages))).items():
        ex.add(attribute, count)
    ex.require(SESSION_ALIVE, ex.eq("version", n_attr(expected_version)))
    hold(ex, turn)
    meta = table.update_item(meta_key(session.session_id), ex)
    return [meta, *_message_items(table, session.session_id, messages, parents, first_seq, now)]


def _message_items(
    table: Table,
    session_id: str,
    messages: Sequence[ChatMessage],
    parents: list[int],
    first_seq: int,
    now: datetime,
) -> list[TransactWriteItemTypeDef]:
    """Each message's item, followed by its client-message-id marker when it has one."""
    items: list[TransactWriteItemTypeDef] = []
    expires = table.session_expiry(now)
    for seq, (message, parent) in enumerate(zip(messages, parents, strict=True), start=first_seq):
        record = encode_message(session_id, message.model_copy(update={"parent_seq": parent}), seq)
        markers: list[Item] = [record]
        if message.client_message_id:
            markers.append({**cmid_key(session_id, client_key(message)), "seq": n_attr(seq)})
        for item in markers:
            if expires:
                item["expires_at"] = expires
            items.append(table.put_item(item, condition=ABSENT))
    return items


async def _raise_duplicate(table: Table, session_id: str, messages: Sequence[ChatMessage], exc: ServiceRefused) -> None:
    """If a client-message-id marker failed its condition, raise DuplicateClientMessage for it."""
    reasons = exc.reasons
    index = 1  # transaction item 0 is META; each message is followed by its client-id marker, if any
    for message in messages:
        if not message.client_message_id:
            index += 1
            continue
        marker = index + 1
        if marker < len(reasons) and reasons[marker] == "ConditionalCheckFailed":
            found = await table.get(cmid_key(session_id, client_key(message)))
            raise DuplicateClientMessage(
                "a message with this client_message_id is already stored",
                client_message_id=message.client_message_id,
                seq=int(found["seq"]["N"]) if found else None,
            ) from exc
        index += 2


async def replace_pending(table: Table, session_id: str, seq: int, message: ChatMessage) -> int | None:
    """Replace the pending tool message at ``seq`` with its result, only while it is still pending for the
    same operation and the session exists. Returns the new session version, or None when nothing was
    replaced (already saved, or the session was deleted)."""
    assert message.operation_id is not None
    return await replace_placeholder(table, session_id, seq, message, waiting=("pending_op", message.operation_id))


async def replace_placeholder(
    table: Table, session_id: str, seq: int, message: ChatMessage, *, waiting: tuple[str, str]
) -> int | None:
    """Replace the placeholder at ``seq`` while it still waits for ``waiting`` (attribute, value: see
    ``codecs.waiting_attributes``) and the session exists; the replacement may wait in turn (an approved
    long-running call). Returns the new session version, or None when nothing was replaced."""
    attribute, value = waiting
    stored = message.model_copy(update={"seq": seq})
    body = Expression().set("body", s_attr(message_body(stored, seq))).remove(attribute)
    for name, attr_value in waiting_attributes(stored).items():
        body.set(name, attr_value)
    body.require(body.eq(attribute, s_attr(value)))
    items = [
        table.update_item(msg_key(session_id, seq), body),
        table.update_item(meta_key(session_id), Expression().increment("version").require(SESSION_ALIVE)),
    ]
    try:
        await table.transact(items)
    except ServiceRefused as exc:
        if exc.cancelled and exc.condition_failed:
            return None
        raise
    meta = await reads.load_meta(table, session_id)
    return meta.version if meta else None
