"""Each stream event encodes to exactly the documented chunk (the ``ai`` package's ``uiMessageChunkSchema``): no
extra keys, strict JSON."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from chatcore.stream import (
    DONE,
    PING,
    STREAM_HEADERS,
    ProtocolProfile,
    StreamAbort,
    StreamData,
    StreamError,
    StreamFinish,
    StreamFinishStep,
    StreamStart,
    StreamStartStep,
    StreamTextDelta,
    StreamTextEnd,
    StreamTextStart,
    StreamToolInputAvailable,
    StreamToolInputDelta,
    StreamToolInputStart,
    StreamToolOutputAvailable,
    StreamToolOutputError,
    encode_event,
    encode_json,
    sse,
)

CASES = [
    (StreamStart(message_id="turn_1"), {"type": "start", "messageId": "turn_1"}),
    (StreamStart(), {"type": "start"}),
    (StreamStartStep(), {"type": "start-step"}),
    (StreamFinishStep(), {"type": "finish-step"}),
    (StreamTextStart(id="t1"), {"type": "text-start", "id": "t1"}),
    (StreamTextDelta(id="t1", delta="Hi"), {"type": "text-delta", "id": "t1", "delta": "Hi"}),
    (StreamTextEnd(id="t1"), {"type": "text-end", "id": "t1"}),
    (
        StreamToolInputStart(tool_call_id="c1", tool_name="calc"),
        {"type": "tool-input-start", "toolCallId": "c1", "toolName": "calc", "providerExecuted": True, "dynamic": True},
    ),
    (
        StreamToolInputDelta(tool_call_id="c1", input_text_delta='{"a"'),
        {"type": "tool-input-delta", "toolCallId": "c1", "inputTextDelta": '{"a"'},
    ),
    (
        StreamToolInputAvailable(tool_call_id="c1", tool_name="calc", input=None),
        {
            "type": "tool-input-available",
            "toolCallId": "c1",
            "toolName": "calc",
            "input": None,
            "providerExecuted": True,
            "dynamic": True,
        },
    ),
    (
        StreamToolOutputAvailable(tool_call_id="c1", output={"result": 2}),
        {
            "type": "tool-output-available",
            "toolCallId": "c1",
            "output": {"result": 2},
            "providerExecuted": True,
            "dynamic": True,
        },
    ),
    (
        StreamToolOutputError(tool_call_id="c1", error_text="bad"),
        {
            "type": "tool-output-error",
            "toolCallId": "c1",
            "errorText": "bad",
            "providerExecuted": True,
            "dynamic": True,
        },
    ),
    (StreamData.of("title", {"title": "T"}, id="title"), {"type": "data-title", "data": {"title": "T"}, "id": "title"}),
    (StreamData.of("status", None, transient=True), {"type": "data-status", "data": None, "transient": True}),
    (StreamError(error_text="oops"), {"type": "error", "errorText": "oops"}),
    (StreamFinish(finish_reason="stop"), {"type": "finish"}),
    (StreamAbort(), {"type": "abort"}),
]


@pytest.mark.parametrize(("event", "expected"), CASES)
def test_event_chunks_are_exact(event, expected):
    assert event.chunk() == expected


def test_finish_reason_only_with_the_profile_switch():
    assert StreamFinish(finish_reason="tool-calls").chunk(ProtocolProfile(finish_reason=True)) == {
        "type": "finish",
        "finishReason": "tool-calls",
    }


def test_unknown_fields_and_types_are_refused():
    with pytest.raises(ValidationError):
        StreamTextDelta(id="t", delta="x", extra=1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        StreamFinish(finish_reason="unknown")


def test_json_is_strict_and_framing_is_sse():
    with pytest.raises(ValueError, match="JSON compliant"):
        encode_json({"type": "data-x", "data": float("nan")})
    framed = encode_event(StreamTextDelta(id="t", delta="a\nb"), event_id="1-0")
    assert framed == b'id: 1-0\ndata: {"type":"text-delta","id":"t","delta":"a\\nb"}\n\n'
    assert sse('{"a":1}') == b'data: {"a":1}\n\n'
    assert DONE == b"data: [DONE]\n\n" and PING.startswith(b":")
    assert STREAM_HEADERS["x-vercel-ai-ui-message-stream"] == "v1"
    assert STREAM_HEADERS["content-type"] == "text/event-stream"
    assert json.loads(encode_json({"t": "é"})) == {"t": "é"}
