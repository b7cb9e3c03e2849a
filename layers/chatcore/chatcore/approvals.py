"""Tool approval (human in the loop): a tool call that waits for the user's yes or no before it runs.

A tool requires approval by its own flag (``Tool.requires_approval``) or the ``TOOLS_REQUIRING_APPROVAL`` setting.
When the model calls one, the turn streams the tool input and ``tool-approval-request`` (at protocol level v5 a
``data-approval`` part instead), stores the assistant's call with an ``awaiting_approval`` tool message in its
place and an ``Approval`` record, and ends.

The answer comes from the next ``POST /chat`` (the tool part in state ``approval-responded``, as ``useChat`` sends
it) or from ``POST /chat/{id}/approvals/{approval_id}``. Only the stored record is trusted — its tool call, its
arguments (the client's copy of the input is ignored), its deadline and its state: answering is a conditional write,
so of two answers exactly one wins. An approved call runs (a long-running tool starts its operation); a denied one
gets an ``execution-denied`` result, so the model has an output for every call. The answer continues in the same
assistant message (``start.messageId`` is the asking turn's id), streamed like any turn and resumable.

An approval not answered by its deadline (``APPROVAL_TIMEOUT_SECONDS``) can no longer be approved (409). A new
message sent while approvals wait denies them first (the user moved on), so the history stays valid.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from typing import Literal

from chatcore.errors import Conflict, NotFound, ValidationFailed
from chatcore.models import ChatMessage, ChatSession, new_id

ApprovalState = Literal["pending", "approved", "denied"]
DENIED_BY_USER = "The user denied this tool call."
SUPERSEDED = "The user did not answer the approval request and sent a new message instead."
EXPIRED = "The approval request expired without an answer."


@dataclass(frozen=True)
class Approval:
    approval_id: str
    session_id: str
    tool_call_id: str
    tool_name: str
    arguments_digest: str  # of the stored call's arguments, so a record cannot be paired with another call
    answer_id: str  # the assistant message (turn id) that asked, and that the answer continues
    deadline: int  # epoch seconds
    state: ApprovalState = "pending"
    reason: str | None = None
    run_id: str | None = None  # the run that answered it (its replay log)

    @classmethod
    def new(
        cls, session_id: str, tool_call_id: str, tool_name: str, arguments: str, answer_id: str, deadline: int
    ) -> Approval:
        return cls(new_id("appr_"), session_id, tool_call_id, tool_name, digest(arguments), answer_id, deadline)

    def answered(self, approved: bool, reason: str | None, run_id: str) -> Approval:
        return replace(self, state="approved" if approved else "denied", reason=reason, run_id=run_id)


@dataclass(frozen=True)
class ApprovalAnswer:
    """One answer as a client sent it; ``tool_call_id`` (from a UI message's tool part) must match the record."""

    approval_id: str
    approved: bool
    reason: str | None = None
    tool_call_id: str | None = None


def digest(arguments: str) -> str:
    return hashlib.sha256(arguments.encode("utf-8", "surrogatepass")).hexdigest()


def placeholder(approval: Approval, answer_id: str) -> ChatMessage:
    """The tool message that stands for a call waiting for approval (the model never reads it: no model call
    happens while one waits)."""
    content = json.dumps({"status": "awaiting_approval", "approval_id": approval.approval_id})
    return ChatMessage(
        role="tool",
        tool_call_id=approval.tool_call_id,
        name=approval.tool_name,
        content=content,
        status="awaiting_approval",
        turn_id=answer_id,
        approval_id=approval.approval_id,
    )


def denial(waiting: ChatMessage, reason: str) -> ChatMessage:
    """The execution-denied result that replaces a waiting call's placeholder."""
    return waiting.model_copy(
        update={
            "content": json.dumps({"type": "execution-denied", "reason": reason}, ensure_ascii=False),
            "status": "denied",
        }
    )


def waiting_on_path(session: ChatSession) -> list[ChatMessage]:
    return [m for m in session.messages if m.status == "awaiting_approval"]


def check(
    session: ChatSession, record: Approval | None, answer: ApprovalAnswer, now: int
) -> tuple[ChatMessage, Approval]:
    """The waiting placeholder an answer may resolve, or why not: another session's or an unknown approval is
    404; a tool call id that is not the record's is 422; an answered, expired or off-branch approval is 409."""
    if record is None or record.session_id != session.session_id:
        raise NotFound("approval not found")
    if answer.tool_call_id is not None and answer.tool_call_id != record.tool_call_id:
        raise ValidationFailed(
            "the approval does not belong to this tool call",
            details=[{"loc": ["messages", "parts", "toolCallId"], "msg": "does not match the approval"}],
        )
    if record.state != "pending":
        raise Conflict("this approval was already answered")
    if record.deadline <= now:
        raise Conflict("this approval expired")
    for message in waiting_on_path(session):
        if message.approval_id == record.approval_id:
            call = session.call_of(message.tool_call_id)
            if call is None or digest(call.function.arguments) != record.arguments_digest:
                raise Conflict("the stored tool call does not match its approval")
            return message, record
    raise Conflict("this approval is not waiting on the conversation's active branch")


def arguments_of(session: ChatSession, message: ChatMessage) -> str:
    """The stored arguments of a waiting call (what runs when it is approved — never the client's copy)."""
    call = session.call_of(message.tool_call_id)
    if call is None:
        raise Conflict("the stored tool call is missing")
    return call.function.arguments
