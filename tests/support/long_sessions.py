"""Long sessions written straight into the table: the items the store writes (META, messages, client-message-id
markers, encoded by its own codecs), put with BatchWriteItem instead of one turn per message, so a 10,000-message
session takes seconds. A ``Tree`` builds the messages with their parents (branches included)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chatcore.dynamo.codecs import encode_message, encode_meta
from chatcore.dynamo.keys import cmid_key, n_attr, s_attr
from chatcore.models import ChatMessage, ChatSession, Usage, client_key, utcnow

BATCH = 25


@dataclass
class Tree:
    """Messages in the order they were stored (seq = position + 1), each naming its parent."""

    messages: list[ChatMessage] = field(default_factory=list)

    @property
    def last(self) -> int:
        return len(self.messages)

    def add(self, parent: int, role: str, text: str, **fields: Any) -> int:
        seq = self.last + 1
        if role == "user":
            fields.setdefault("client_message_id", f"c{seq}")
            fields.setdefault("turn_id", f"turn_{seq}")
        if role == "assistant":
            fields.setdefault("turn_id", f"turn_{parent}")
            fields.setdefault("usage", Usage(prompt_tokens=10, completion_tokens=5, total_tokens=15))
        self.messages.append(ChatMessage(role=role, content=text, seq=seq, parent_seq=parent, **fields))
        return seq

    def line(self, parent: int, count: int, *, words: int = 12) -> int:
        """``count`` messages after ``parent``, user and assistant in turn (user first); returns the last seq."""
        for index in range(count):
            role = "user" if index % 2 == 0 else "assistant"
            parent = self.add(parent, role, f"{role} {self.last + 1}: " + " ".join(["word"] * words))
        return parent


def write_session(
    client: Any,
    table: str,
    session_id: str,
    user_id: str,
    tree: Tree,
    *,
    leaf: int | None = None,
    summary_seq: int = 0,
    title: str = "Seeded",
) -> None:
    """Put the session's items as the store would have written them (``client``: a boto3/botocore DynamoDB
    client). ``summary_seq`` stores a context summary covering the path up to that message."""
    now = utcnow()
    session = ChatSession(session_id=session_id, user_id=user_id, title=title)
    meta = encode_meta(session, now, tree.messages)
    meta["leaf_seq"] = n_attr(leaf if leaf is not None else tree.last)
    if summary_seq:
        meta["summary"] = s_attr(f"Summary of the conversation up to message {summary_seq}.")
        meta["summary_seq"] = n_attr(summary_seq)
    items: list[dict[str, Any]] = [meta]
    for message in tree.messages:
        assert message.seq is not None
        items.append(encode_message(session_id, message, message.seq))
        if message.client_message_id:
            items.append({**cmid_key(session_id, client_key(message)), "seq": n_attr(message.seq)})
    for start in range(0, len(items), BATCH):
        requests: list[Any] = [{"PutRequest": {"Item": item}} for item in items[start : start + BATCH]]
        while requests:
            result = client.batch_write_item(RequestItems={table: requests})
            requests = result.get("UnprocessedItems", {}).get(table, [])
