"""Each stream event encodes to exactly the documented chunk (the ``ai`` package's ``uiMessageChunkSchema``): no
extra keys, strict JSON; each protocol level sends what its clients accept (tests/contract proves it against the
real clients)."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from chatcore.stream import (
    DEFAULT_LEVEL,
    DENIED_TEXT,
    DONE,
    LEVELS,
    PING,
    STREAM_HEADERS,
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
    StreamToolApprovalRequest,
    StreamToolInputAvailable,
    StreamToolInputDelta,
    StreamToolInputStart,
    StreamToolOutputAvailable,
    StreamToolOutputDenied,
    StreamToolOutputError,
    approval_granted,
    encode_event,
    encode_json,
    protocol_level,
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
    (StreamFinish(), {"type": "finish"}),
    (StreamAbort(), {"type": "abort"}),
]


@pytest.mark.parametrize(("event", "expected"), CASES)
def test_event_chunks_are_exact_and_the_same_at_every_level(event, expected):
    assert event.chunk() == expected
    for level in LEVELS.values():
        chunk = event.chunk()
        assert level.adapt(chunk) == [expected] and level.adapt(chunk)[0] is chunk  # untouched, not copied


APPROVAL = StreamToolApprovalRequest(approval_id="ap1", tool_call_id="c1", tool_name="delete_file", input={"p": "x"})
AUTOMATIC = StreamToolApprovalRequest(
    approval_id="ap2", tool_call_id="c2", tool_name="delete_file", input={"p": "y"}, is_automatic=True
)
DENIED = StreamToolOutputDenied(tool_call_id="c1", approval_id="ap1", tool_name="delete_file", input={"p": "x"})
APPROVAL_DATA = {"approvalId": "ap1", "toolCallId": "c1", "toolName": "delete_file", "input": {"p": "x"}}


def test_the_stored_form_keeps_what_every_level_needs():
    assert APPROVAL.chunk() == {
        "type": "tool-approval-request",
        "approvalId": "ap1",
        "toolCallId": "c1",
        "toolName": "delete_file",
        "input": {"p": "x"},
    }
    assert AUTOMATIC.chunk()["isAutomatic"] is True
    assert DENIED.chunk() == {
        "type": "tool-output-denied",
        "toolCallId": "c1",
        "approvalId": "ap1",
        "toolName": "delete_file",
        "input": {"p": "x"},
        "providerExecuted": True,
        "dynamic": True,
    }
    assert StreamFinish(finish_reason="tool-calls").chunk() == {"type": "finish", "finishReason": "tool-calls"}


# The rules of the table, level by level (the stored chunk in, the wire chunks out).
ADAPTED = {
    "v5": {
        "finish": [{"type": "finish"}],
        "approval": [{"type": "data-approval", "id": "ap1", "data": {**APPROVAL_DATA, "state": "requested"}}],
        "automatic": [],
        "denied": [
            {"type": "data-approval", "id": "ap1", "data": {**APPROVAL_DATA, "state": "denied"}},
            {
                "type": "tool-output-error",
                "toolCallId": "c1",
                "errorText": DENIED_TEXT,
                "providerExecuted": True,
                "dynamic": True,
            },
        ],
        "v7-only": [],
        "granted": [{"type": "data-approval", "id": "ap1", "data": {**APPROVAL_DATA, "state": "approved"}}],
    },
    "v6": {
        "finish": [{"type": "finish", "finishReason": "tool-calls"}],
        "approval": [{"type": "tool-approval-request", "approvalId": "ap1", "toolCallId": "c1"}],
        "automatic": [],
        "denied": [{"type": "tool-output-denied", "toolCallId": "c1"}],
        "v7-only": [],
        "granted": [],
    },
    "v7": {
        "finish": [{"type": "finish", "finishReason": "tool-calls"}],
        "approval": [{"type": "tool-approval-request", "approvalId": "ap1", "toolCallId": "c1"}],
        "automatic": [{"type": "tool-approval-request", "approvalId": "ap2", "toolCallId": "c2", "isAutomatic": True}],
        "denied": [{"type": "tool-output-denied", "toolCallId": "c1"}],
        "v7-only": [
            {"type": "tool-approval-response", "approvalId": "ap2", "approved": True},
            {"type": "custom", "kind": "x.y"},
            {"type": "reasoning-file", "url": "data:text/plain,a", "mediaType": "text/plain"},
        ],
        "granted": [],
    },
}
STORED = {
    "finish": [StreamFinish(finish_reason="tool-calls").chunk()],
    "approval": [APPROVAL.chunk()],
    "automatic": [AUTOMATIC.chunk()],
    "denied": [DENIED.chunk()],
    "v7-only": [
        {"type": "tool-approval-response", "approvalId": "ap2", "approved": True},
        {"type": "custom", "kind": "x.y"},
        {"type": "reasoning-file", "url": "data:text/plain,a", "mediaType": "text/plain"},
    ],
    "granted": [approval_granted("ap1", "c1", "delete_file", {"p": "x"}).chunk()],
}


@pytest.mark.parametrize("name", sorted(LEVELS))
def test_each_level_adapts_the_stored_form(name):
    level = LEVELS[name]
    for case, stored in STORED.items():
        assert [out for chunk in stored for out in level.adapt(chunk)] == ADAPTED[name][case], case


def test_levels_by_name_and_json():
    assert DEFAULT_LEVEL is LEVELS["v5"] and set(LEVELS) == {"v5", "v6", "v7"}
    assert protocol_level(" V6 ") is LEVELS["v6"] and protocol_level("v8") is None and protocol_level("") is None
    text = encode_json(StreamTextDelta(id="t", delta="é").chunk())
    assert LEVELS["v5"].adapt_json(text)[0] is text  # unchanged chunks keep their exact text
    assert [json.loads(t) for t in LEVELS["v5"].adapt_json(encode_json(DENIED.chunk()))] == ADAPTED["v5"]["denied"]
    # Two chunks from one event: the SSE id goes on the last, so a client cut between them gets both again.
    framed = encode_event(DENIED, event_id="7-0").decode()
    assert framed.count("data: ") == 2 and framed.index("id: 7-0") > framed.index("data-approval")


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
