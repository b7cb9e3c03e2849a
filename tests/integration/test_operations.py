"""Long-running tools end to end: the real ASL from statemachines/ runs in moto, its Lambda tasks dispatched
in-process to the project's real handlers (local/step_functions.py)."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from chatcore.builtin_tools import default_registry
from chatcore.errors import ToolFailure
from chatcore.operations import operation_id_for
from chatcore.signing import signed_headers
from chatcore.tools import MAX_RESULT_CHARS, TRUNCATED, ToolContext, ToolRegistry
from tests.conftest import ChatStack, start_chat_stack, stop_chat_stack
from tests.integration.test_chat_turns import _tool_pairs_complete, history
from tests.support.sse import parse_sse


def _turn(client: httpx.Client, sid: str, text: str):
    response = client.post(f"/sessions/{sid}/stream", json={"message": text})
    assert response.status_code == 200, response.text
    return parse_sse(response.text)


def _wait(predicate, timeout: float = 30.0, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def _operation(chat: ChatStack, operation_id: str):
    return chat.server.call(chat.stack.engine.deps.operations.get(operation_id))


def _resume_until_continuation(client: httpx.Client, sid: str, timeout: float = 30.0):
    """Poll GET /chat/{id}/stream like a client that resumes, until the continuation turn is streamed."""

    def attempt():
        response = client.get(f"/chat/{sid}/stream")
        return parse_sse(response.text) if response.status_code == 200 else None

    return _wait(attempt, timeout, interval=0.1)


def test_long_running_tool_end_to_end(chat_stack: ChatStack):
    chat_stack.llm.token_delay = 0.03
    with chat_stack.client() as client:
        sid = client.post("/sessions", json={"title": "ops"}).json()["id"]
        for n in range(3):
            _turn(client, sid, f"Remember fact number {n}.")
        first = _turn(client, sid, "[[tool:summarize_conversation]]")
        assert first.done and first.types[-1] == "finish" and not first.of_type("error")
        call = first.of_type("tool-input-available")[0]
        assert call["toolName"] == "summarize_conversation"
        assert not first.of_type("tool-output-available")  # the result comes later
        operation = first.of_type("data-operation")[0]
        assert operation["data"]["status"] == "running" and operation["id"] == operation["data"]["operation_id"]
        assert operation["data"]["operation_id"] == operation_id_for(sid, call["toolCallId"])

        continuation = _resume_until_continuation(client, sid)
        assert continuation.done and continuation.types[0] == "start" and continuation.types[-1] == "finish"
        assert continuation.chunks[0]["messageId"] != first.chunks[0]["messageId"]  # a new turn
        assert "The tool summarize_conversation returned" in continuation.text()

        messages = _wait(
            lambda: (
                (m := history(chat_stack, client, sid))[-1]["role"] == "assistant"
                and m[-1]["turn_id"] == continuation.chunks[0]["messageId"]
                and m
            )
        )
        tool = next(m for m in messages if m["role"] == "tool" and m["tool_call_id"] == call["toolCallId"])
        assert tool["status"] == "complete"
        result = json.loads(tool["content"])
        assert result["summary"].startswith("Summary:") and result["messages"]["user"] == 4
        assert messages[-1]["content"] == continuation.text()
        assert _tool_pairs_complete(messages)
        record = _wait(lambda: (op := _operation(chat_stack, operation["id"])) and op.status == "done" and op)
        assert record.status == "done"
        # The session is usable for the next turn (history valid for the LLM).
        after = _turn(client, sid, "thanks")
        assert after.done and not after.of_type("error")


def test_callback_tool_completed_through_the_callback_function(chat_stack: ChatStack):
    chat_stack.llm.token_delay = 0.05  # a continuation that streams for a while, to be caught live
    with chat_stack.client() as client:
        sid = client.post("/sessions", json={"title": "ops"}).json()["id"]
        first = _turn(client, sid, '[[tool:wait_for_external_job {"description": "render the video"}]]')
        operation_id = first.of_type("data-operation")[0]["id"]
        _wait(lambda: _operation(chat_stack, operation_id).status == "waiting")
        body = json.dumps({"output": {"video": "https://example.invalid/v.mp4", "frames": 240}}).encode()
        secret = chat_stack.settings.callback_secret
        url = f"/operations/{operation_id}/complete"
        headers = {"content-type": "application/json", **signed_headers(secret, "POST", url, body)}

        forged = client.post(url, content=body, headers={**headers, "x-chat-signature": "sha256=" + "0" * 64})
        assert forged.status_code == 401
        # S2: a signature binds the method, the operation and the action, not only the body.
        other = f"/operations/op_{'1' * 40}/complete"
        for_other = {"content-type": "application/json", **signed_headers(secret, "POST", other, body)}
        assert client.post(url, content=body, headers=for_other).status_code == 401
        heartbeat_url = f"/operations/{operation_id}/heartbeat"
        beat = {"content-type": "application/json", **signed_headers(secret, "POST", heartbeat_url, body)}
        assert client.post(heartbeat_url, content=body, headers=beat).status_code == 200
        assert client.post(url, content=body, headers=beat).status_code == 401  # a heartbeat does not complete
        assert client.post(heartbeat_url, content=body, headers=beat).status_code == 401  # nor repeats
        assert _operation(chat_stack, operation_id).status == "waiting"

        # The base URL as the template outputs it ends in "/": the joined path has a double slash.
        accepted = client.post(f"{chat_stack.url}/{url}", content=body, headers=headers)
        assert accepted.status_code == 202, accepted.text
        replay = client.post(url, content=body, headers=headers)
        assert replay.status_code == 401 and replay.json()["error"]["code"] == "unauthorized"
        later = time.time() + 1  # a new signature needs a new timestamp (same second, same bytes: a replay)
        fresh = {"content-type": "application/json", **signed_headers(secret, "POST", url, body, now=later)}
        resent = client.post(url, content=body, headers=fresh)
        assert resent.status_code == 409  # signed anew: authentic, but the operation is completed already

        continuation = _resume_until_continuation(client, sid)
        assert "frames" in continuation.text()
        messages = _wait(
            lambda: (m := history(chat_stack, client, sid)) and m[-1]["role"] == "assistant" and len(m) == 4 and m
        )
        tool = messages[2]
        assert tool["role"] == "tool" and json.loads(tool["content"]) == {
            "video": "https://example.invalid/v.mp4",
            "frames": 240,
        }
        assert _tool_pairs_complete(messages)
        assert (
            client.post(
                "/operations/op_" + "0" * 40 + "/complete",
                content=body,
                headers={
                    "content-type": "application/json",
                    **signed_headers(secret, "POST", "/operations/op_" + "0" * 40 + "/complete", body),
                },
            ).status_code
            == 404
        )


def test_failing_tool_still_gets_a_continuation(chat_stack: ChatStack):
    chat_stack.llm.token_delay = 0.05
    with chat_stack.client() as client:
        sid = client.post("/sessions", json={"title": "ops"}).json()["id"]
        # The summary tool's focus is limited to 200 characters: the worker's argument validation fails.
        first = _turn(client, sid, '[[tool:summarize_conversation {"focus": "' + "x" * 300 + '"}]]')
        assert first.of_type("data-operation")
        continuation = _resume_until_continuation(client, sid)
        assert "invalid arguments" in continuation.text()
        messages = _wait(lambda: (m := history(chat_stack, client, sid)) and len(m) == 4 and m)
        assert messages[2]["status"] == "error" and _tool_pairs_complete(messages)


def test_callback_that_never_comes_times_out(table_name: str, redis_url: str):
    chat = start_chat_stack(table_name, redis_url, callback_timeout_seconds=2, callback_heartbeat_seconds=1)
    chat.llm.token_delay = 0.05
    try:
        with chat.client() as client:
            sid = client.post("/sessions", json={"title": "ops"}).json()["id"]
            _turn(client, sid, '[[tool:wait_for_external_job {"description": "never finishes"}]]')
            continuation = _resume_until_continuation(client, sid, timeout=40)
            assert "timed out" in continuation.text() or "stopped reporting" in continuation.text()
            messages = _wait(lambda: (m := history(chat, client, sid)) and len(m) == 4 and m)
            assert messages[2]["status"] == "error" and _tool_pairs_complete(messages)
    finally:
        stop_chat_stack(chat)


def test_duplicate_start_is_a_no_op(chat_stack: ChatStack):
    with chat_stack.client() as client:
        sid = client.post("/sessions", json={"title": "ops"}).json()["id"]
        first = _turn(client, sid, '[[tool:wait_for_external_job {"description": "x"}]]')
        operation_id = first.of_type("data-operation")[0]["id"]
        operations = chat_stack.stack.engine.deps.operations
        original = _wait(lambda: (op := _operation(chat_stack, operation_id)) and op.status == "waiting" and op)
        again = chat_stack.server.call(operations.start(original))
        assert again.operation_id == operation_id and again.status == "waiting"
        import boto3

        executions = boto3.client("stepfunctions").list_executions(stateMachineArn=operations.state_machine_arn)
        assert [e["name"] for e in executions["executions"]].count(operation_id) == 1


def test_session_deleted_mid_operation(table_name: str, redis_url: str):
    # moto's interpreter notices a stop when the waiting task wakes up: a short heartbeat makes that prompt.
    chat = start_chat_stack(table_name, redis_url, callback_heartbeat_seconds=2, callback_timeout_seconds=30)
    try:
        _deleted_mid_operation(chat)
    finally:
        stop_chat_stack(chat)


def _deleted_mid_operation(chat: ChatStack) -> None:
    import boto3

    with chat.client() as client:
        sid = client.post("/sessions", json={"title": "ops"}).json()["id"]
        first = _turn(client, sid, '[[tool:wait_for_external_job {"description": "slow"}]]')
        operation_id = first.of_type("data-operation")[0]["id"]
        _wait(lambda: _operation(chat, operation_id).status == "waiting")
        assert client.delete(f"/sessions/{sid}").status_code == 204
        assert _operation(chat, operation_id).status == "cancelled"
        sfn = boto3.client("stepfunctions")
        arn = chat.stack.engine.deps.operations._execution_arn(operation_id)
        _wait(lambda: sfn.describe_execution(executionArn=arn)["status"] != "RUNNING", timeout=20)
        stopped = sfn.describe_execution(executionArn=arn)
        # AWS reports ABORTED at once; moto's interpreter only notices the stop when the waiting task wakes
        # (here at its heartbeat) and then ends the execution as FAILED. Either way it never reached its end.
        assert stopped["status"] in ("ABORTED", "FAILED"), stopped
        body = b'{"output": 1}'
        late = client.post(
            f"/operations/{operation_id}/complete",
            content=body,
            headers={
                "content-type": "application/json",
                **signed_headers(chat.settings.callback_secret, "POST", f"/operations/{operation_id}/complete", body),
            },
        )
        assert late.status_code == 409
        items = boto3.client("dynamodb").query(
            TableName=chat.settings.table_name,
            KeyConditionExpression="PK = :pk",
            ExpressionAttributeValues={":pk": {"S": f"SESSION#{sid}"}},
        )["Items"]
        assert [i["SK"]["S"] for i in items] == ["META"]  # nothing written back afterwards
        assert client.get(f"/chat/{sid}/stream").status_code == 404


@pytest.mark.parametrize("kind", ["long_running", "callback"])
def test_operations_need_a_state_machine(table_name: str, redis_url: str, kind: str, monkeypatch):
    """Without Step Functions (e.g. a real AWS endpoint and no STATE_MACHINE_ARN) the call gets an error result."""
    monkeypatch.setattr("local.stack.RUNNING", {})
    monkeypatch.delenv("STATE_MACHINE_ARN", raising=False)
    chat = start_chat_stack(table_name, redis_url)
    try:
        with chat.client() as client:
            sid = client.post("/sessions", json={"title": "ops"}).json()["id"]
            tool = "summarize_conversation" if kind == "long_running" else "wait_for_external_job"
            args = "{}" if kind == "long_running" else '{"description": "x"}'
            stream = _turn(client, sid, f"[[tool:{tool} {args}]]")
            assert stream.of_type("tool-output-error") and not stream.of_type("data-operation")
            messages = history(chat, client, sid)
            assert _tool_pairs_complete(messages) and messages[-1]["role"] == "assistant"
    finally:
        stop_chat_stack(chat)


@pytest.mark.parametrize("timestamp", ["²".encode("latin-1"), "12²".encode("latin-1"), "١٢".encode()])
def test_non_ascii_digit_timestamp_is_401_json(chat_stack: ChatStack, timestamp: bytes):
    """S3: str.isdigit() accepts "²" and int() then raised: a 500. Now a 401 with the JSON error shape.
    (HTTP header bytes are read as latin-1, so b"\xb2" arrives as "²", as a Function URL event carries it.)"""
    path = f"/operations/op_{'2' * 40}/complete"
    headers = {
        "content-type": "application/json",
        **signed_headers(chat_stack.settings.callback_secret, "POST", path, b"{}"),
        "x-chat-timestamp": timestamp,
    }
    with httpx.Client(base_url=chat_stack.url, timeout=10) as client:
        response = client.post(path, content=b"{}", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


def _cut(content: str) -> bool:
    return len(content) == MAX_RESULT_CHARS + len(TRUNCATED) and content.endswith(TRUNCATED)


class _NoArgs(BaseModel):
    pass


def _tools_with_huge_job(ok: bool) -> ToolRegistry:
    """The built-in tools and a long-running job whose output (or error) is far over the limit — injected into
    the stack's containers (the chat engine and the in-process task functions), not patched in."""

    async def huge_job(args: _NoArgs, ctx: ToolContext) -> dict[str, Any]:
        if not ok:
            raise ToolFailure("e" * 40_000)
        return {"summary": "s" * 40_000}

    registry = default_registry()
    registry.tool("A background job with a very large result (test).", kind="long_running")(huge_job)
    return registry


@pytest.mark.parametrize("ok", [True, False], ids=["result", "error-result"])
def test_long_running_result_over_the_limit_is_cut(table_name: str, redis_url: str, ok: bool):
    """The worker's output (or its error) travels through the state machine; the save step stores it cut."""
    chat_stack = start_chat_stack(table_name, redis_url, tools=_tools_with_huge_job(ok))
    try:
        _check_long_running_result_is_cut(chat_stack, ok)
    finally:
        stop_chat_stack(chat_stack)


def _check_long_running_result_is_cut(chat_stack: ChatStack, ok: bool) -> None:
    with chat_stack.client() as client:
        sid = client.post("/sessions", json={"title": "ops"}).json()["id"]
        first = _turn(client, sid, "[[tool:huge_job]]")
        assert first.of_type("data-operation")
        messages = _wait(lambda: (m := history(chat_stack, client, sid)) and len(m) == 4 and m)
        assert messages[3]["role"] == "assistant" and "returned" in messages[3]["content"]  # the continuation
        tool = messages[2]
        assert tool["role"] == "tool" and tool["status"] == ("complete" if ok else "error")
        assert _cut(tool["content"]) and tool["content"].startswith('{"summary": "sss' if ok else '{"error": "eee')
        sent = [m for m in chat_stack.llm.requests[-1]["messages"] if m["role"] == "tool"]
        assert [m["content"] for m in sent] == [tool["content"]]


def test_callback_result_over_the_limit_is_cut(chat_stack: ChatStack):
    with chat_stack.client() as client:
        sid = client.post("/sessions", json={"title": "ops"}).json()["id"]
        first = _turn(client, sid, '[[tool:wait_for_external_job {"description": "a big report"}]]')
        operation_id = first.of_type("data-operation")[0]["id"]
        _wait(lambda: _operation(chat_stack, operation_id).status == "waiting")
        body = json.dumps({"output": {"report": "r" * 40_000}}).encode()
        url = f"/operations/{operation_id}/complete"
        headers = {
            "content-type": "application/json",
            **signed_headers(chat_stack.settings.callback_secret, "POST", url, body),
        }
        assert client.post(url, content=body, headers=headers).status_code == 202
        messages = _wait(lambda: (m := history(chat_stack, client, sid)) and len(m) == 4 and m)
        assert messages[3]["role"] == "assistant" and "returned" in messages[3]["content"]  # the continuation
        tool = messages[2]
        assert tool["status"] == "complete" and _cut(tool["content"]) and tool["content"].startswith('{"report": "rrr')
        sent = [m for m in chat_stack.llm.requests[-1]["messages"] if m["role"] == "tool"]
        assert [m["content"] for m in sent] == [tool["content"]]
