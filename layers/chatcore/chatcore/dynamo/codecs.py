"""Items <-> domain models: META <-> ``ChatSession`` (without messages), ``MSG#`` <-> ``ChatMessage``.

META keeps usage totals only (``usage_prompt``/``usage_completion``/``usage_total``); the per-call records are the
messages' own ``usage``, so ``ChatSession.usage`` is rebuilt from the messages a read returns (``with_messages``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from chatcore.dynamo.keys import META, Item, by_user_sk, filter_keys, key, msg_sk, n_attr, pk, s_attr, user_pk
from chatcore.models import ChatMessage, ChatSession, Usage, active_path, usage_of, utcnow, version_groups

USAGE_ATTRIBUTES = ("usage_prompt", "usage_completion", "usage_total")


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def usage_values(usage: Usage) -> dict[str, dict[str, str]]:
    """META's usage attributes for ``usage`` (the totals, or what a write adds to them)."""
    counts = (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens)
    return {name: n_attr(count) for name, count in zip(USAGE_ATTRIBUTES, counts, strict=True)}


def field_value(field: str, value: Any) -> dict[str, str]:
    """An editable META field (``models.EDITABLE_FIELDS``): metadata as compact JSON, the others as strings."""
    return s_attr(json.dumps(value, separators=(",", ":")) if field == "metadata" else str(value))


def encode_meta(session: ChatSession, now: datetime, messages: Sequence[ChatMessage]) -> Item:
    """META of a new session that is created with ``messages``."""
    item: Item = {
        **key(pk(session.session_id), META),
        "session_id": s_attr(session.session_id),
        "title": s_attr(session.title),
        "chat_type": s_attr(session.chat_type),
        "status": s_attr(session.status),
        "metadata": field_value("metadata", session.metadata),
        "created_at": s_attr(iso(now)),
        "updated_at": s_attr(iso(now)),
        "message_count": n_attr(len(messages)),
        "leaf_seq": n_attr(len(messages)),
        "version": n_attr(1),
        **usage_values(Usage.total(usage_of(messages))),
    }
    if session.user_id:
        item["user_id"] = s_attr(session.user_id)
        item["GSI1PK"] = s_attr(user_pk(session.user_id))
        item["GSI1SK"] = s_attr(by_user_sk(iso(now), session.session_id))
        item.update(filter_keys(session.user_id, session.chat_type, session.status))
    return item


def decode_meta(item: Item) -> ChatSession:
    counts = [int(item.get(name, {}).get("N", "0")) for name in USAGE_ATTRIBUTES]
    return ChatSession(
        session_id=item["session_id"]["S"],
        user_id=item.get("user_id", {}).get("S"),
        title=item.get("title", {}).get("S", ""),
        chat_type=item.get("chat_type", {}).get("S", "chat"),
        status=item.get("status", {}).get("S", "active"),
        metadata=json.loads(item.get("metadata", {}).get("S", "{}")),
        created_at=datetime.fromisoformat(item["created_at"]["S"]),
        updated_at=datetime.fromisoformat(item["updated_at"]["S"]),
        usage_totals=Usage(prompt_tokens=counts[0], completion_tokens=counts[1], total_tokens=counts[2]),
        message_count=int(item["message_count"]["N"]),
        # Sessions stored before branches existed are one line: their leaf is the last message.
        leaf_seq=int((item.get("leaf_seq") or item["message_count"])["N"]),
        version=int(item["version"]["N"]),
        active_turn_id=_active_turn(item),
        context_summary=item.get("summary", {}).get("S", ""),
        summary_seq=int(item.get("summary_seq", {}).get("N", "0")),
    )


def lease_of(item: Item) -> tuple[str | None, int | None]:
    """META's turn lease as stored: the turn it names and when it expires (epoch seconds), each None when absent."""
    expires = item.get("active_turn_expires", {}).get("N")
    return item.get("active_turn_id", {}).get("S"), None if expires is None else int(expires)


def _active_turn(item: Item) -> str | None:
    turn, expires = lease_of(item)
    # Held until it lapses, in the conditions' terms (``expires < now`` is lapsed): in the second it expires the lease
    # still refuses another turn, so it must not read as free.
    return turn if turn and (expires or 0) >= int(utcnow().timestamp()) else None


def with_messages(session: ChatSession, messages: list[ChatMessage]) -> ChatSession:
    """``session`` holding the active path through ``messages`` (every stored message), the versions on it and
    its per-call ``usage``; marked clean."""
    path = active_path(messages, session.leaf_seq)
    session.messages = path
    session.versions = version_groups(messages, path)
    session.usage = usage_of(path)
    session.mark_clean()
    return session


def encode_message(session_id: str, message: ChatMessage, seq: int) -> Item:
    item: Item = {
        **key(pk(session_id), msg_sk(seq)),
        "seq": n_attr(seq),
        "body": s_attr(message_body(message, seq)),
    }
    if message.parent_seq is not None:
        # Beside the body, so replacing a placeholder's body (``appends.replace_placeholder``) keeps its place.
        item["parent"] = n_attr(message.parent_seq)
    item.update(waiting_attributes(message))
    return item


def waiting_attributes(message: ChatMessage) -> Item:
    """What a placeholder waits for, as an attribute its replacement is conditional on: the long-running
    operation (``pending_op``) or the user's approval (``pending_approval``)."""
    if message.status == "pending" and message.operation_id:
        return {"pending_op": s_attr(message.operation_id)}
    if message.status == "awaiting_approval" and message.approval_id:
        return {"pending_approval": s_attr(message.approval_id)}
    return {}


def message_body(message: ChatMessage, seq: int) -> str:
    return message.model_copy(update={"seq": seq}).model_dump_json()


def decode_message(item: Item) -> ChatMessage:
    message = ChatMessage.model_validate_json(item["body"]["S"])
    if "parent" in item:
        message.parent_seq = int(item["parent"]["N"])
    elif message.parent_seq is None and message.seq is not None:  # stored before branches existed: one line
        message.parent_seq = message.seq - 1
    return message
