"""The tool registry and the built-in tools."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pydantic import BaseModel

from chatcore.builtin_tools import default_registry, evaluate
from chatcore.tools import MAX_RESULT_CHARS, TRUNCATED, ToolContext, ToolFailure, ToolRegistry, ToolResult

pytestmark = pytest.mark.anyio
CTX = ToolContext(user_id="u", session_id="s")


class EchoArgs(BaseModel):
    text: str


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("6*7", 42),
        ("2**10", 1024),
        ("(1+2)/4", 0.75),
        ("-3 + +4", 1),
        ("sqrt(16)", 4.0),
        ("pi > 3", None),
        ("10 // 3 + 10 % 3", 4),
        ("round(2.567, 2)", 2.57),
        ("factorial(5)", 120),
    ],
)
def test_calculator(expression, value):
    if value is None:
        with pytest.raises(ToolFailure):
            evaluate(expression)
    else:
        assert evaluate(expression) == value


@pytest.mark.parametrize(
    "expression",
    [
        "__import__('os')",
        "open('x')",
        "a.b",
        "[1,2]",
        "2**100000",
        "9e999*9e999",
        "1/0",
        "factorial(10000)",
        "lambda: 1",
        "",
        "1 +",
        "True + 1",
    ],
)
def test_calculator_refuses_anything_else(expression):
    with pytest.raises(ToolFailure):
        evaluate(expression)


async def test_registry_turns_bad_input_into_error_results():
    registry = default_registry()
    assert set(registry.names()) == {
        "calculator",
        "current_time",
        "search_sessions",
        "summarize_conversation",
        "wait_for_external_job",
        "rename_session",
    }
    assert [name for name in registry.names() if registry.needs_approval(name)] == ["rename_session"]
    assert registry.get("summarize_conversation").kind == "long_running"
    assert registry.get("wait_for_external_job").kind == "callback"
    schema = {t["function"]["name"]: t for t in registry.openai_tools()}["calculator"]
    assert schema["function"]["parameters"]["required"] == ["expression"]
    ok = await registry.run("calculator", '{"expression": "1+1"}', CTX)
    assert ok.ok and ok.output == {"expression": "1+1", "result": 2}
    for name, args in [
        ("calculator", "{not json"),
        ("calculator", '{"expr": 1}'),
        ("nope", "{}"),
        ("current_time", '{"timezone": "Mars/Olympus"}'),
        ("search_sessions", '{"query": "x"}'),
    ]:
        result = await registry.run(name, args, CTX)
        assert not result.ok and result.output["error"]


async def test_current_time_in_a_zone():
    result = await default_registry().run("current_time", '{"timezone": "Europe/Paris"}', CTX)
    assert (
        result.ok and result.output["timezone"] == "Europe/Paris" and result.output["iso"][-6:] in ("+01:00", "+02:00")
    )


async def test_adding_a_tool_is_a_few_lines_and_crashes_are_contained():
    registry = ToolRegistry()

    @registry.tool("Echo the text back.")
    async def echo(args: EchoArgs, ctx: ToolContext) -> dict:
        if args.text == "boom":
            raise RuntimeError("internal detail")
        return {"echo": args.text}

    assert (await registry.run("echo", '{"text": "hi"}', CTX)).output == {"echo": "hi"}
    crashed = await registry.run("echo", '{"text": "boom"}', CTX)
    assert not crashed.ok and "internal detail" not in str(crashed.to_message("call_1", "echo").content)
    with pytest.raises(ValueError, match="already registered"):
        registry.tool("again")(echo)


@pytest.mark.parametrize(
    ("output", "reason"),
    [
        ({"result": 999999**1000}, "4300 digits"),  # past Python's int-to-str limit
        ({"at": datetime(2026, 1, 1, tzinfo=UTC)}, "datetime"),
        ({"value": float("nan")}, "Out of range float"),
    ],
)
def test_a_result_that_is_not_json_becomes_an_error_message(output, reason):
    message = ToolResult(True, output).to_message("call_1", "calc", turn_id="turn_1")
    error = json.loads(message.content or "")["error"]
    assert message.status == "error" and "cannot be encoded as JSON" in error and reason in error
    assert (message.role, message.tool_call_id, message.name, message.turn_id) == ("tool", "call_1", "calc", "turn_1")


def test_a_message_is_cut_at_the_limit_and_a_pending_one_says_so():
    exact = ToolResult(True, "x" * (MAX_RESULT_CHARS - 2)).to_message("c", "t")
    assert exact.content == json.dumps("x" * (MAX_RESULT_CHARS - 2))  # at the limit: whole
    over = ToolResult(False, {"error": "x" * MAX_RESULT_CHARS}).to_message("c", "t")
    assert (
        over.status == "error"
        and over.content == json.dumps({"error": "x" * MAX_RESULT_CHARS})[:MAX_RESULT_CHARS] + TRUNCATED
    )
    pending = ToolResult(True, {"status": "running"}).to_message("c", "t", operation_id="op_1", pending=True)
    assert pending.status == "pending" and pending.operation_id == "op_1"


class _Nothing(BaseModel):
    pass


async def test_a_transient_failure_of_a_long_running_tool_fails_its_task():
    """The state machine retries a RunTool task that fails with ``TransientToolError``: the worker must raise it,
    not turn it into an error result (a sync tool's is an error result: the turn goes on)."""
    from chatcore.errors import TransientToolError

    registry = ToolRegistry()

    async def busy(args: _Nothing, ctx: ToolContext) -> dict[str, str]:
        raise TransientToolError("busy")

    registry.tool("busy in the background", name="busy_job", kind="long_running")(busy)
    registry.tool("busy in the turn", name="busy_now")(busy)
    ctx = ToolContext(user_id="u", session_id="s")
    with pytest.raises(TransientToolError):
        await registry.run("busy_job", "{}", ctx)
    result = await registry.run("busy_now", "{}", ctx)
    assert not result.ok and result.output == {"error": "tool busy_now failed unexpectedly"}


class TextArgs(BaseModel):
    text: str


def test_the_tools_schemas_are_built_once_and_follow_registrations():
    """pydantic's JSON schemas took ~2 ms of every turn before its model request: they are built once."""
    registry = ToolRegistry()

    @registry.tool("Echo the text.")
    async def echo(args: TextArgs, ctx: ToolContext) -> str:
        return args.text

    first, again = registry.openai_tools(), registry.openai_tools()
    assert first == again and first is not again and first[0] is again[0]
    assert first[0]["function"]["name"] == "echo" and "title" not in first[0]["function"]["parameters"]

    @registry.tool("Shout the text.")
    async def shout(args: TextArgs, ctx: ToolContext) -> str:
        return args.text.upper()

    assert [t["function"]["name"] for t in registry.openai_tools()] == ["echo", "shout"]
