"""A Step Functions task failing: the real ASL runs in moto and its Lambda tasks in-process (local/step_functions.py),
a handler's exception becoming a Lambda function error named after its class, as in AWS. What the user sees (the
continuation streamed to a resuming client) and what is stored (the tool message that replaced the placeholder).

The timing-out cases are in tests/integration/test_operations.py (a callback that never comes: the task's
``States.Timeout``/``States.HeartbeatTimeout``); moto does not enforce ``TimeoutSeconds`` on a synchronous Lambda
task, so a RunTool timeout cannot be produced here."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel

from chatcore.builtin_tools import default_registry
from chatcore.errors import TransientToolError
from chatcore.tools import ToolContext, ToolRegistry
from tests.conftest import ChatStack, start_chat_stack, stop_chat_stack
from tests.integration.test_chat_turns import _tool_pairs_complete, history
from tests.integration.test_operations import _resume_until_continuation, _wait
from tests.support.sse import parse_sse


class _NoArgs(BaseModel):
    pass


def _flaky_tools(failures: int, calls: list[int]) -> ToolRegistry:
    """The built-in tools and a long-running job that fails transiently ``failures`` times, then answers."""

    async def flaky_job(args: _NoArgs, ctx: ToolContext) -> dict[str, Any]:
        calls.append(1)
        if len(calls) <= failures:
            raise TransientToolError("the upstream service is busy")
        return {"rendered": True, "attempt": len(calls)}

    registry = default_registry()
    registry.tool("A background job that is sometimes busy (test).", kind="long_running")(flaky_job)
    return registry


@pytest.fixture
def flaky(request: pytest.FixtureRequest, table_name: str, redis_url: str) -> Iterator[tuple[ChatStack, list[int]]]:
    calls: list[int] = []
    chat = start_chat_stack(table_name, redis_url, tools=_flaky_tools(request.param, calls))
    chat.llm.token_delay = 0.02
    yield chat, calls
    stop_chat_stack(chat)


def _run_job(chat: ChatStack) -> tuple[str, list[dict[str, Any]], str]:
    with chat.client() as client:
        sid = client.post("/sessions", json={"title": "ops"}).json()["id"]
        first = parse_sse(client.post(f"/sessions/{sid}/stream", json={"message": "[[tool:flaky_job]]"}).text)
        assert first.of_type("data-operation") and first.done
        continuation = _resume_until_continuation(client, sid, timeout=40)
        messages = _wait(lambda: (m := history(chat, client, sid)) and len(m) == 4 and m, timeout=40)
        return sid, messages, continuation.text()


@pytest.mark.parametrize("flaky", [1], indirect=True)
def test_a_task_failing_transiently_is_retried_by_the_state_machine(flaky: tuple[ChatStack, list[int]]):
    """The tool raises ``TransientToolError`` once: the RunTool task fails and the ASL's Retry runs it again.
    User sees: the continuation quoting the tool's result. Stored: the tool message, complete, with that result."""
    chat, calls = flaky
    _, messages, text = _run_job(chat)
    assert len(calls) == 2
    tool = messages[2]
    assert tool["role"] == "tool" and tool["status"] == "complete"
    assert json.loads(tool["content"]) == {"rendered": True, "attempt": 2}
    assert "flaky_job returned" in text and messages[3]["content"] == text
    assert _tool_pairs_complete(messages)


@pytest.mark.parametrize("flaky", [99], indirect=True)
def test_a_task_failing_every_time_is_caught_and_the_user_told(flaky: tuple[ChatStack, list[int]]):
    """The tool fails transiently on every attempt: the task's retries run out (1 + 3 attempts) and the Catch
    records the failure. User sees: a continuation saying the background job failed. Stored: the tool message as
    an error result, the history valid for the next turn."""
    chat, calls = flaky
    _, messages, text = _run_job(chat)
    assert len(calls) == 4
    tool = messages[2]
    assert tool["role"] == "tool" and tool["status"] == "error"
    assert json.loads(tool["content"]) == {"error": "the background job failed"}
    assert "failed" in text and messages[3]["content"] == text
    assert _tool_pairs_complete(messages)
