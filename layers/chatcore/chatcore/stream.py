"""The Vercel AI SDK *UI message stream* (protocol ``v1``): one class per chunk, the protocol levels, and the SSE
framing.

Follows the ``ai`` package's chunk schema (``uiMessageChunkSchema`` in ``packages/ai/src/ui-message-stream/
ui-message-chunks.ts`` of vercel/ai), checked against the published package by the oracle in ``tests/contract/``
(pinned: ai 5.0.216, 5.0.277, 6.0.326, 7.0.173). JSON is strict (no NaN). Usage, heartbeats and status travel as
``data-*`` parts or SSE comments, never as invented chunk types.

Two forms of a chunk:

* the **stored** form, ``StreamEvent.chunk()``: what the engine publishes and the replay log keeps — the richest
  chunk (as ai 7 accepts it) plus a few *context* keys (``StreamEvent.context``) that only a lower level's
  replacement needs (a v5 client gets a tool approval as a ``data-approval`` part, which names the tool);
* the **wire** form: ``ProtocolLevel.adapt`` of the stored form, for the level of one reader. Every reader (the
  live follower and the replay-log follower, ``chatcore.streams``) adapts each chunk itself, so clients of two
  levels can follow the same turn. Nothing else decides what a client version accepts: the engine has no version
  checks.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, JsonValue
from pydantic.alias_generators import to_camel

# The level names are settings' values; they live with the settings (re-exported here).
from chatcore.config import LEVEL_NAMES as LEVEL_NAMES
from chatcore.config import ProtocolLevelName as ProtocolLevelName

STREAM_HEADERS = {
    "content-type": "text/event-stream",
    "cache-control": "no-cache",
    "connection": "keep-alive",
    "x-vercel-ai-ui-message-stream": "v1",
    "x-accel-buffering": "no",
}
DONE = b"data: [DONE]\n\n"
PING = b": ping\n\n"

FinishReason = Literal["stop", "length", "content-filter", "tool-calls", "error", "other"]


class StreamEvent(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True, defer_build=True
    )

    type: str
    # Keys sent even when their value is None (the protocol requires the key).
    always: ClassVar[frozenset[str]] = frozenset()
    # Keys of the stored form that no client receives as such: what a lower level's replacement chunk needs.
    context: ClassVar[frozenset[str]] = frozenset()

    def chunk(self) -> dict[str, Any]:
        """The stored form (see the module's docstring); ``ProtocolLevel.adapt`` makes the wire form."""
        data = self.model_dump(by_alias=True, mode="json")
        return {key: value for key, value in data.items() if value is not None or key in self.always}


class StreamStart(StreamEvent):
    type: Literal["start"] = "start"
    message_id: str | None = None
    message_metadata: dict[str, JsonValue] | None = None


class StreamStartStep(StreamEvent):
    type: Literal["start-step"] = "start-step"


class StreamFinishStep(StreamEvent):
    type: Literal["finish-step"] = "finish-step"


class StreamTextStart(StreamEvent):
    type: Literal["text-start"] = "text-start"
    id: str


class StreamTextDelta(StreamEvent):
    type: Literal["text-delta"] = "text-delta"
    id: str
    delta: str


class StreamTextEnd(StreamEvent):
    type: Literal["text-end"] = "text-end"
    id: str


class StreamToolInputStart(StreamEvent):
    type: Literal["tool-input-start"] = "tool-input-start"
    tool_call_id: str
    tool_name: str
    provider_executed: bool | None = True
    dynamic: bool | None = True


class StreamToolInputDelta(StreamEvent):
    type: Literal["tool-input-delta"] = "tool-input-delta"
    tool_call_id: str
    input_text_delta: str


class StreamToolInputAvailable(StreamEvent):
    type: Literal["tool-input-available"] = "tool-input-available"
    tool_call_id: str
    tool_name: str
    input: JsonValue
    provider_executed: bool | None = True
    dynamic: bool | None = True
    always: ClassVar[frozenset[str]] = frozenset({"input"})


class StreamToolOutputAvailable(StreamEvent):
    type: Literal["tool-output-available"] = "tool-output-available"
    tool_call_id: str
    output: JsonValue
    provider_executed: bool | None = True
    dynamic: bool | None = True
    always: ClassVar[frozenset[str]] = frozenset({"output"})


class StreamToolOutputError(StreamEvent):
    type: Literal["tool-output-error"] = "tool-output-error"
    tool_call_id: str
    error_text: str
    provider_executed: bool | None = True
    dynamic: bool | None = True


class StreamToolApprovalRequest(StreamEvent):
    """The tool call (already sent with ``tool-input-available``) waits for the user's approval (ai >= 6)."""

    type: Literal["tool-approval-request"] = "tool-approval-request"
    approval_id: str
    tool_call_id: str
    is_automatic: bool | None = None  # ai >= 7: approved without the user
    tool_name: str
    input: JsonValue
    always: ClassVar[frozenset[str]] = frozenset({"input"})
    context: ClassVar[frozenset[str]] = frozenset({"toolName", "input"})


class StreamToolOutputDenied(StreamEvent):
    """The user denied the tool call: it never ran (ai >= 6)."""

    type: Literal["tool-output-denied"] = "tool-output-denied"
    tool_call_id: str
    approval_id: str
    tool_name: str
    input: JsonValue
    provider_executed: bool | None = True
    dynamic: bool | None = True
    always: ClassVar[frozenset[str]] = frozenset({"input"})
    context: ClassVar[frozenset[str]] = frozenset({"approvalId", "toolName", "input", "providerExecuted", "dynamic"})


class StreamData(StreamEvent):
    """A ``data-<name>`` part; a later part with the same ``id`` replaces it on the client."""

    type: str
    data: JsonValue
    id: str | None = None
    transient: bool | None = None
    always: ClassVar[frozenset[str]] = frozenset({"data"})

    @classmethod
    def of(cls, name: str, data: JsonValue, *, id: str | None = None, transient: bool | None = None) -> StreamData:
        return cls(type=f"data-{name}", data=data, id=id, transient=transient)


class StreamError(StreamEvent):
    type: Literal["error"] = "error"
    error_text: str


class StreamFinish(StreamEvent):
    type: Literal["finish"] = "finish"
    finish_reason: FinishReason | None = None
    message_metadata: dict[str, JsonValue] | None = None


class StreamAbort(StreamEvent):
    type: Literal["abort"] = "abort"


# -- protocol levels ------------------------------------------------------------------------------------------

# Chunk types that exist only in ai 7.x (a 6.x client fails the chat on them).
V7_ONLY_TYPES = frozenset({"tool-approval-response", "custom", "reasoning-file"})
DENIED_TEXT = "The user denied this tool call."
_APPROVAL_CONTEXT = {
    "tool-approval-request": StreamToolApprovalRequest.context,
    "tool-output-denied": StreamToolOutputDenied.context,
}


@dataclass(frozen=True)
class ProtocolLevel:
    """What the clients of one ``ai`` major accept: the one table of version-dependent output (``LEVELS``).

    ``useChat`` sends no version, so the level is configured (``UI_STREAM_PROTOCOL``) and may be chosen per
    request (header ``x-ui-stream-protocol``)."""

    name: ProtocolLevelName
    finish_reason: bool  # `finish.finishReason`: rejected by ai < 5.0.92, and v5 is every 5.x
    tool_approval: bool  # `tool-approval-request`, `tool-output-denied` chunks: ai >= 6.0.0
    v7_chunks: bool  # V7_ONLY_TYPES and `tool-approval-request.isAutomatic`: ai >= 7.0.0

    def adapt(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        """The wire chunks a client of this level gets for one stored chunk: usually ``[chunk]`` itself (the same
        object when nothing changes), none for a chunk this level has no use for, or its replacements."""
        kind = chunk.get("type")
        if kind in V7_ONLY_TYPES:
            return [chunk] if self.v7_chunks else []
        if kind == "finish":
            return [chunk] if self.finish_reason or "finishReason" not in chunk else [_without(chunk, {"finishReason"})]
        if kind == "tool-approval-request":
            if chunk.get("isAutomatic") and not self.v7_chunks:
                return []  # nothing for the user to decide: the tool part goes on to its output
            if not self.tool_approval:
                return [_approval_part(chunk, "requested")]
            return [_without(chunk, _APPROVAL_CONTEXT[kind] | ({"isAutomatic"} if not self.v7_chunks else set()))]
        if kind == "data-approval":
            return [] if self.tool_approval else [chunk]  # ai >= 6 clients hold an approval's state themselves
        if kind == "tool-output-denied":
            if not self.tool_approval:
                # A 5.x tool part has no denied state: output-error is its terminal state (left input-available,
                # it would look like a call still running and keep the message incomplete). Like 6.x/7.x's
                # tool-output-denied, it needs the client to hold the message it continues (tests/contract).
                error = {"type": "tool-output-error", "toolCallId": chunk["toolCallId"], "errorText": DENIED_TEXT}
                error |= {k: chunk[k] for k in ("providerExecuted", "dynamic") if chunk.get(k) is not None}
                return [_approval_part(chunk, "denied"), error]
            return [_without(chunk, _APPROVAL_CONTEXT[kind])]
        return [chunk]

    def adapt_json(self, text: str) -> list[str]:
        """``adapt`` of one stored chunk's JSON; an unchanged chunk keeps its exact text."""
        chunk = json.loads(text)
        return [text if out is chunk else encode_json(out) for out in self.adapt(chunk)]


def _without(chunk: dict[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    drop = set(keys)
    return {key: value for key, value in chunk.items() if key not in drop}


ApprovalPartState = Literal["requested", "approved", "denied"]


def _approval_part(chunk: dict[str, Any], state: ApprovalPartState) -> dict[str, Any]:
    """A ``data-approval`` part: how a 5.x client (no approval chunks) learns of an approval; the part id is the
    approval id, so the answer replaces the request on the client."""
    data = {
        "approvalId": chunk["approvalId"],
        "toolCallId": chunk["toolCallId"],
        "toolName": chunk["toolName"],
        "input": chunk["input"],
        "state": state,
    }
    return {"type": "data-approval", "id": chunk["approvalId"], "data": data}


def approval_granted(approval_id: str, tool_call_id: str, tool_name: str, input: JsonValue) -> StreamData:
    """What the continuation of an approved call sends first: a 5.x client's ``data-approval`` part moves from
    ``requested`` to ``approved`` (a denial does so through ``tool-output-denied``); the levels with approval chunks
    drop it, their clients set the state themselves when the user answers."""
    chunk = {"approvalId": approval_id, "toolCallId": tool_call_id, "toolName": tool_name, "input": input}
    part = _approval_part(chunk, "approved")
    return StreamData(type=part["type"], data=part["data"], id=part["id"])


LEVELS: dict[ProtocolLevelName, ProtocolLevel] = {
    "v5": ProtocolLevel("v5", finish_reason=False, tool_approval=False, v7_chunks=False),
    "v6": ProtocolLevel("v6", finish_reason=True, tool_approval=True, v7_chunks=False),
    "v7": ProtocolLevel("v7", finish_reason=True, tool_approval=True, v7_chunks=True),
}
DEFAULT_LEVEL = LEVELS["v5"]  # every client accepts it


def protocol_level(name: str) -> ProtocolLevel | None:
    """The level of a setting or header value (``v5``, ``v6``, ``v7``; case and spaces ignored), None if unknown."""
    wanted = name.strip().lower()
    return next((level for level in LEVELS.values() if level.name == wanted), None)


# -- framing --------------------------------------------------------------------------------------------------


def encode_json(chunk: dict[str, Any]) -> str:
    return json.dumps(chunk, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def sse(data: str, *, event_id: str | None = None) -> bytes:
    """Frame one SSE event; ``data`` is a single line of JSON (json.dumps never emits raw newlines)."""
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}data: {data}\n\n".encode()


def encode_event(event: StreamEvent, *, level: ProtocolLevel = DEFAULT_LEVEL, event_id: str | None = None) -> bytes:
    """The SSE bytes a client of ``level`` gets for one event (``event_id`` on the last of them)."""
    chunks = level.adapt(event.chunk())
    return b"".join(
        sse(encode_json(chunk), event_id=event_id if i == len(chunks) - 1 else None) for i, chunk in enumerate(chunks)
    )
