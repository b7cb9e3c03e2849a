"""The Vercel AI SDK *UI message stream* (protocol ``v1``): one class per chunk, and the SSE framing.

Follows the ``ai`` package's chunk schema (``uiMessageChunkSchema`` in ``packages/ai/src/ui-message-stream/
ui-message-chunks.ts`` of vercel/ai), checked against the published package by the oracle in ``tests/contract/``
(pinned: ai 5.0.216, 5.0.277, 6.0.326): each event encodes to exactly the documented keys (older clients reject
one extra key), JSON is strict (no NaN), and ``finish.finishReason`` is sent only when the profile enables it
(clients below 5.0.92 reject it).
Usage, heartbeats and status travel as ``data-*`` parts or SSE comments, never as invented chunk types.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, JsonValue
from pydantic.alias_generators import to_camel

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


@dataclass(frozen=True)
class ProtocolProfile:
    """What the connected clients accept, named in one place instead of version checks in many."""

    finish_reason: bool = False  # `finish.finishReason`: rejected by ai < 5.0.92


SAFE_PROFILE = ProtocolProfile()


class StreamEvent(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True)

    type: str
    # Keys sent even when their value is None (the protocol requires the key).
    always: ClassVar[frozenset[str]] = frozenset()

    def chunk(self, profile: ProtocolProfile = SAFE_PROFILE) -> dict[str, Any]:
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

    def chunk(self, profile: ProtocolProfile = SAFE_PROFILE) -> dict[str, Any]:
        data = super().chunk(profile)
        if not profile.finish_reason:
            data.pop("finishReason", None)
        return data


class StreamAbort(StreamEvent):
    type: Literal["abort"] = "abort"


def encode_json(chunk: dict[str, Any]) -> str:
    return json.dumps(chunk, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def sse(data: str, *, event_id: str | None = None) -> bytes:
    """Frame one SSE event; ``data`` is a single line of JSON (json.dumps never emits raw newlines)."""
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}data: {data}\n\n".encode()


def encode_event(event: StreamEvent, *, profile: ProtocolProfile = SAFE_PROFILE, event_id: str | None = None) -> bytes:
    return sse(encode_json(event.chunk(profile)), event_id=event_id)
