"""Wire models of the sessions API: request bodies (strict, no unknown fields) and response shapes.

These models are also the source of the OpenAPI document (``openapi.py``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, JsonValue, StringConstraints
from pydantic.json_schema import SkipJsonSchema

from chatcore.models import CHAT_TYPE_PATTERN, ChatMessage, ChatSession, Feedback, Rating, ToolCall, Usage, UserContext

ChatType = Annotated[str, StringConstraints(pattern=CHAT_TYPE_PATTERN)]
SessionStatusIn = Literal["active", "archived"]
MAX_COMMENT_CHARS = 2000
# A path's {message_id} or a branch switch's message_id: a message id, an answer's turn id or a client message id.
MESSAGE_REF_PATTERN = r"^[\w.:#-]{1,128}$"


MAX_VERSION = 2**53  # a version is counted up from 1; a larger one is no version (and no DynamoDB number)


def _integral(value: Any) -> Any:
    """A JSON number with no fraction is an integer (JSON Schema says so): 3.0 is the version 3."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# Validators and serializers are built on first use, not at import (a cold start builds only what its request needs).
class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)


class _Out(BaseModel):
    model_config = ConfigDict(defer_build=True)


class CreateSessionIn(_In):
    title: str = ""
    chat_type: ChatType = "chat"
    metadata: dict[str, JsonValue] = Field(default_factory=dict)


class UpdateSessionIn(_In):
    # At least one field, and each one given has a value: a null is refused (422), not read as "unchanged".
    model_config = ConfigDict(extra="forbid", defer_build=True, json_schema_extra={"minProperties": 1})
    title: str | SkipJsonSchema[None] = None
    chat_type: ChatType | SkipJsonSchema[None] = None
    status: SessionStatusIn | SkipJsonSchema[None] = None
    metadata: dict[str, JsonValue] | SkipJsonSchema[None] = None


class DeleteSessionsIn(_In):
    session_ids: list[str] = Field(min_length=1, max_length=25)


class UserContextIn(_In):
    context: str  # at most USER_CONTEXT_MAX_CHARS characters; "" clears it
    # The version this write replaces (0: none stored yet), from a GET: a stale one is 409 and writes nothing.
    # Without it the write replaces whatever is stored.
    version: Annotated[int, Field(ge=0, le=MAX_VERSION), BeforeValidator(_integral)] | None = None


class UserContextOut(_Out):
    context: str
    version: int  # 0: none stored
    updated_at: datetime | None

    @classmethod
    def of(cls, found: UserContext) -> UserContextOut:
        return cls(context=found.context, version=found.version, updated_at=found.updated_at)


class FeedbackIn(_In):
    rating: Rating
    comment: str | None = Field(default=None, max_length=MAX_COMMENT_CHARS)


class FeedbackOut(_Out):
    rating: Rating
    comment: str | None
    updated_at: datetime

    @classmethod
    def of(cls, feedback: Feedback) -> FeedbackOut:
        return cls(rating=feedback.rating, comment=feedback.comment, updated_at=feedback.updated_at)


class SessionOut(_Out):
    id: str
    user_id: str | None
    title: str
    chat_type: str
    status: str
    metadata: dict[str, JsonValue]
    created_at: datetime
    updated_at: datetime
    message_count: int
    usage: Usage
    version: int

    @classmethod
    def of(cls, session: ChatSession) -> SessionOut:
        return cls(
            id=session.session_id,
            user_id=session.user_id,
            title=session.title,
            chat_type=session.chat_type,
            status=session.status,
            metadata=session.metadata,
            created_at=session.created_at,
            updated_at=session.updated_at,
            message_count=session.message_count,
            usage=session.usage_totals,
            version=session.version,
        )


class MessageOut(_Out):
    id: str
    seq: int | None
    role: str
    content: str | None
    tool_calls: list[ToolCall] | None
    tool_call_id: str | None
    name: str | None
    status: str
    created_at: datetime
    usage: Usage | None
    turn_id: str | None
    client_message_id: str | None
    parent_seq: int | None
    # A tool message awaiting the user's approval (status ``awaiting_approval``), and its answer: the approval id
    # to answer at ``POST /chat/{session_id}/approvals/{approval_id}``.
    approval_id: str | None
    # The ids of every version of this message (itself included, oldest first) when it has other versions
    # (a regenerated answer, an edited message); only in the active path's listing.
    versions: list[str] | None
    # The owner's rating of the answer this message belongs to (assistant messages only; null when none).
    feedback: FeedbackOut | None

    @classmethod
    def of(
        cls, message: ChatMessage, *, versions: list[str] | None = None, feedback: Feedback | None = None
    ) -> MessageOut:
        return cls(
            id=message.message_id,
            seq=message.seq,
            client_message_id=message.client_message_id,
            parent_seq=message.parent_seq,
            approval_id=message.approval_id,
            versions=versions,
            role=message.role,
            content=message.content,
            tool_calls=message.tool_calls,
            tool_call_id=message.tool_call_id,
            name=message.name,
            status=message.status,
            created_at=message.created_at,
            usage=message.usage,
            turn_id=message.turn_id,
            feedback=FeedbackOut.of(feedback) if feedback is not None and message.role == "assistant" else None,
        )


class SessionListOut(_Out):
    sessions: list[SessionOut]
    next_cursor: str | None


class MessageListOut(_Out):
    messages: list[MessageOut]
    next_cursor: str | None


class VersionsOut(_Out):
    versions: list[MessageOut]
    active_index: int  # the version on the active path; -1 when none is


class SwitchBranchIn(_In):
    message_id: str = Field(min_length=1, max_length=128, json_schema_extra={"pattern": MESSAGE_REF_PATTERN})


class DeleteSessionsOut(_Out):
    deleted: list[str]
    not_found: list[str]


class ErrorDetail(_Out):
    loc: list[str]
    msg: str


class ErrorBody(_Out):
    code: str
    message: str
    details: list[ErrorDetail] | None = None


class ErrorOut(_Out):
    error: ErrorBody


def dump(model: BaseModel) -> Any:
    return model.model_dump(mode="json")
