"""The message tree of a session, as pure functions over its stored messages (no I/O).

Every message names its parent; regenerate and edit add siblings (``chatcore.intents``). A message is addressed
by the ids a client holds: our ``message_id``, the answer's id ``useChat`` holds (the turn id, ``start.messageId``)
or a user message's client id. The versions of a message are its siblings of the same role; switching to one makes
the newest leaf under it the session's active leaf (what ChatGPT-style "2 / 3" arrows do).
"""

from __future__ import annotations

from collections.abc import Sequence

from chatcore.models import ChatMessage


def find(messages: Sequence[ChatMessage], ref: str, active: Sequence[ChatMessage] = ()) -> ChatMessage | None:
    """The message ``ref`` names: a message id; else the first answer message of a turn (a turn id); else the user
    message with that client id — the version on the active path, or the newest."""
    for message in messages:
        if message.message_id == ref:
            return message
    answer = [m for m in messages if m.turn_id == ref and m.role != "user"]
    if answer:
        return answer[0]
    turn_user = [m for m in messages if m.turn_id == ref]
    if turn_user:
        return turn_user[0]
    by_client = [m for m in messages if m.client_message_id == ref]
    active_seqs = {m.seq for m in active}
    on_path = [m for m in by_client if m.seq in active_seqs]
    candidates = on_path or by_client
    return candidates[-1] if candidates else None


def versions(messages: Sequence[ChatMessage], message: ChatMessage) -> list[ChatMessage]:
    """``message`` and its siblings of the same role, oldest first."""
    return [m for m in messages if m.parent_seq == message.parent_seq and m.role == message.role]


def newest_leaf(messages: Sequence[ChatMessage], start: ChatMessage) -> int:
    """The leaf reached from ``start`` by always following the newest child."""
    newest_child: dict[int, int] = {}
    for message in messages:
        if message.seq is not None and message.parent_seq is not None:
            newest_child[message.parent_seq] = max(newest_child.get(message.parent_seq, 0), message.seq)
    seq = start.seq or 0
    while seq in newest_child:
        seq = newest_child[seq]
    return seq
