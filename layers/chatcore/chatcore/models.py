"""The domain models: a chat session, its messages, token usage and tool calls.

``ChatSession.model_dump_json()`` -> ``ChatSession.model_validate_json()`` round-trips exactly; that JSON is what the
cache holds. ``to_openai_messages()`` gives the history in the shape the OpenAI chat API accepts.
"""

from __future__ import annotations

import copy
import hashlib
import re
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, PrivateAttr

SESSION_ID_PATTERN = r"^[A-Za-z0-9_-]{8,128}$"
SESSION_ID_RE = re.compile(SESSION_ID_PATTERN)
# A message needs one character that is not blank. Python's whitespace (str.strip) and JSON Schema's (ECMA-262 \s)
# differ on \x1c-\x1f, \x85 and \ufeff; naming them makes the OpenAPI pattern and the check agree in both.
NOT_BLANK_PATTERN = r"[^\s\x1c-\x1f\x85\ufeff]"
CHAT_TYPE_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,31}$"
CHAT_TYPE_RE = re.compile(CHAT_TYPE_PATTERN)

Role = Literal["system", "user", "assistant", "tool"]
# complete: a normal message; partial: cut short by an error or a stop; pending: a tool message waiting for a
# long-running tool's result; awaiting_approval: a tool message whose call waits for the user's approval (it has
# not run); denied: the result of a call the user denied (it never ran); error: a tool message that holds a failure.
MessageStatus = Literal["complete", "partial", "interrupted", "pending", "awaiting_approval", "denied", "error"]
SessionStatus = Literal["active", "archived"]
Rating = Literal["up", "down"]


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str = "") -> str:
    """An unguessable url-safe id (128 random bits)."""
    return prefix + secrets.token_urlsafe(16)


def is_valid_session_id(value: str) -> bool:
    return SESSION_ID_RE.fullmatch(value) is not None


def is_valid_chat_type(value: str) -> bool:
    return CHAT_TYPE_RE.fullmatch(value) is not None


class _Model(BaseModel):
    # Validators are built on first use, not at import: a cold start builds only the models its request needs.
    model_config = ConfigDict(extra="forbid", defer_build=True)


class Usage(_Model):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
        )

    @classmethod
    def total(cls, records: Iterable[Usage]) -> Usage:
        return sum(records, cls())


class ToolCallFunction(_Model):
    name: str
    arguments: str = "{}"


class ToolCall(_Model):
    id: str
    type: Literal["function"] = "function"
    function: ToolCallFunction


class ChatMessage(_Model):
    role: Role
    content: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    name: str | None = None
    message_id: str = Field(default_factory=lambda: new_id("msg_"))
    # Position in the session, assigned by the store when the message is persisted (1-based, dense over every
    # branch: a seq never changes and is never reused).
    seq: int | None = None
    # The message this one follows (0: the first of the conversation). Messages form a tree: a regenerated answer
    # or an edited message is a sibling of the one it replaces. None until stored, unless the writer branches on
    # purpose; the store then makes it the session's active leaf (or the message before it in the same write).
    parent_seq: int | None = None
    # An edited user message: the seq of the version it replaces (same client_message_id, new text).
    edit_of: int | None = None
    client_message_id: str | None = None
    status: MessageStatus = "complete"
    created_at: datetime = Field(default_factory=utcnow)
    usage: Usage | None = None
    # The chat turn that produced the message (assistant and tool messages of one turn form one UI message).
    turn_id: str | None = None
    # A pending tool message waits for this long-running operation's result.
    operation_id: str | None = None
    # A tool message awaiting approval (and the result that replaces it) belongs to this approval.
    approval_id: str | None = None

    def to_openai(self) -> dict[str, Any]:
        if self.role == "tool":
            return {"role": "tool", "tool_call_id": self.tool_call_id or "", "content": self.content or ""}
        if self.role == "assistant":
            message: dict[str, Any] = {"role": "assistant", "content": self.content}
            if self.tool_calls:
                message["tool_calls"] = [call.model_dump() for call in self.tool_calls]
            elif message["content"] is None:
                message["content"] = ""
            return message
        return {"role": self.role, "content": self.content or ""}


EDITABLE_FIELDS = ("title", "chat_type", "status", "metadata")


def usage_of(messages: Iterable[ChatMessage]) -> list[Usage]:
    """One record per model call: the usage of each message that carries one (assistant answers), in order."""
    return [message.usage for message in messages if message.usage is not None]


class ChatSession(_Model):
    """A session and (some of) its messages.

    Usage is kept twice, on purpose. ``usage`` is the list the design documents name: one ``Usage`` per model call
    among ``messages``, derived from the messages' own ``usage`` (the store sets it whenever it loads or saves
    messages); it is not stored separately, so META does not grow with the conversation. ``usage_totals`` is the
    sum over every stored message, kept on META; it is right even when the messages are not loaded (``load_meta``,
    listings), where ``usage`` is empty. For a session without branches, ``usage_totals == Usage.total(usage)``;
    with branches, ``usage`` covers the active path and ``usage_totals`` every answer ever generated.
    """

    session_id: str
    user_id: str | None = None
    title: str = ""
    chat_type: str = "chat"
    status: SessionStatus = "active"
    metadata: dict[str, JsonValue] = Field(default_factory=dict)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    messages: list[ChatMessage] = Field(default_factory=list)
    usage: list[Usage] = Field(default_factory=list)
    usage_totals: Usage = Field(default_factory=Usage)
    # Number of messages persisted and the optimistic-concurrency version of the stored record;
    # both 0 for a session that was never saved.
    message_count: int = 0
    version: int = 0
    # The turn holding the session's lease, if any (a second concurrent turn gets 409).
    active_turn_id: str | None = None
    # The last message of the active branch (0: no messages); ``messages`` is the path from the root to it.
    leaf_seq: int = 0
    # Context-window summary of the path from the root to message summary_seq (a seq names exactly one path, so
    # the summary applies while that message is on the active path).
    context_summary: str = ""
    summary_seq: int = 0
    # For each message (by seq) on the active path that has other versions: the message ids of all its versions
    # (siblings of the same role under the same parent, oldest first). Derived from the stored tree when read.
    versions: dict[int, list[str]] = Field(default_factory=dict)
    # A turn's working set (``working_set``): ``messages`` hold only the recent part of the active path, from the
    # stored summary's message (when it is on the path, else from the root) to the leaf, and ``versions`` is empty.
    # Such a view is never cached, returned or saved as the whole session (``is_complete`` is False for it).
    partial: bool = False
    # The editable fields as they were when this object was built or last saved; an upsert writes only the
    # fields that differ, so it never reverts a concurrent rename with a stale value.
    _clean: dict[str, Any] = PrivateAttr(default_factory=dict)
    # ``title`` holds a generated title (``propose_title``): it is written only where the user has not named the
    # session (META ``user_title``), and the written state must be read back rather than assumed.
    _title_proposed: bool = PrivateAttr(default=False)

    def model_post_init(self, context: Any, /) -> None:
        self.mark_clean()

    def mark_clean(self) -> None:
        self._title_proposed = False
        self._clean = {field: getattr(self, field) for field in EDITABLE_FIELDS}
        self._clean["metadata"] = copy.deepcopy(self.metadata)

    def propose_title(self, title: str) -> None:
        """A generated title: it never replaces a title the user gave (issue 12 item 5)."""
        self.title = title
        self._title_proposed = True

    @property
    def title_proposed(self) -> bool:
        return self._title_proposed

    def changed_fields(self) -> dict[str, Any]:
        return {field: getattr(self, field) for field in EDITABLE_FIELDS if getattr(self, field) != self._clean[field]}

    @classmethod
    def new(
        cls,
        user_id: str | None,
        *,
        title: str = "",
        chat_type: str = "chat",
        metadata: dict[str, JsonValue] | None = None,
        session_id: str | None = None,
    ) -> ChatSession:
        return cls(
            session_id=session_id or new_id(),
            user_id=user_id,
            title=title,
            chat_type=chat_type,
            metadata=metadata or {},
        )

    def to_openai_messages(self) -> list[dict[str, Any]]:
        return [message.to_openai() for message in self.messages]

    def is_complete(self) -> bool:
        """True when ``messages`` is exactly the stored active path, root to ``leaf_seq`` (safe to cache)."""
        if self.partial:
            return False
        parent = 0
        for message in self.messages:
            if message.seq is None or message.parent_seq != parent:
                return False
            parent = message.seq
        return parent == self.leaf_seq

    def misses_older(self) -> bool:
        """True when messages older than ``messages`` are on the active path (a working set that does not start at
        the root): a decision about them needs the whole path."""
        if not self.messages:
            return self.leaf_seq != 0
        return self.messages[0].parent_seq not in (None, 0)

    def working_set(self) -> ChatSession:
        """A copy holding what a turn reads (``partial``): the path from the stored summary's message, when it is
        on the path, to the leaf — else the whole path. ``chatcore.dynamo.reads.load_working_set`` reads the
        same from the table without the older messages."""
        start = 0
        if self.context_summary and self.summary_seq:
            start = next((i for i, m in enumerate(self.messages) if m.seq == self.summary_seq), 0)
        view = self.model_copy(deep=True)
        view.messages, view.versions, view.partial = view.messages[start:], {}, True
        view.usage = usage_of(view.messages)
        return view

    def call_of(self, tool_call_id: str | None) -> ToolCall | None:
        """The assistant's stored tool call with this id, among ``messages``."""
        for message in self.messages:
            for call in message.tool_calls or []:
                if call.id == tool_call_id:
                    return call
        return None

    def path_to(self, seq: int) -> list[ChatMessage]:
        """The active path up to and including message ``seq`` (which must be on it)."""
        for index, message in enumerate(self.messages):
            if message.seq == seq:
                return self.messages[: index + 1]
        raise ValueError(f"message {seq} is not on the active path")


def client_key(message: ChatMessage) -> str:
    """What makes a user message idempotent (its DynamoDB marker, its turn's name in the replay log): the client's
    id, and for an edited version the id with its text's digest — two copies of one edit are one message, a
    different edit is a new version."""
    assert message.client_message_id is not None
    if message.edit_of is None:
        return message.client_message_id
    digest = hashlib.sha256((message.content or "").encode("utf-8", "surrogatepass")).hexdigest()[:24]
    return f"{message.client_message_id}#{digest}"


def active_path(messages: Iterable[ChatMessage], leaf_seq: int) -> list[ChatMessage]:
    """The path from the root to ``leaf_seq`` through the parents of ``messages`` (stored ones)."""
    by_seq = {message.seq: message for message in messages}
    path: list[ChatMessage] = []
    seq = leaf_seq
    while seq and (message := by_seq.get(seq)) is not None and len(path) <= len(by_seq):
        path.append(message)
        seq = message.parent_seq or 0
    path.reverse()
    return path


def version_groups(messages: Iterable[ChatMessage], path: Iterable[ChatMessage]) -> dict[int, list[str]]:
    """For each message of ``path`` that has siblings of its role: every sibling's message id, oldest first."""
    children: dict[tuple[int, str], list[ChatMessage]] = {}
    for message in messages:
        if message.seq is not None:
            children.setdefault((message.parent_seq or 0, message.role), []).append(message)
    groups: dict[int, list[str]] = {}
    for message in path:
        siblings = children.get((message.parent_seq or 0, message.role), [])
        if len(siblings) > 1 and message.seq is not None:
            groups[message.seq] = [m.message_id for m in sorted(siblings, key=lambda m: m.seq or 0)]
    return groups


class UserContext(_Model):
    """What the assistant knows about a user ("business understanding"), added to the system prompt of their chat
    turns. ``version`` counts the writes; 0 means nothing was ever stored (``context`` is then empty)."""

    user_id: str
    context: str = ""
    version: int = 0
    updated_at: datetime | None = None


class Feedback(_Model):
    """A user's rating of one answer: the chat turn ``turn_id`` (the ``messageId`` of its stream)."""

    turn_id: str
    rating: Rating
    comment: str | None = None
    updated_at: datetime = Field(default_factory=utcnow)
