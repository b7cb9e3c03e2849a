"""The Lambda steps of the ToolOperationStateMachine (statemachines/tool_operation.asl.json).

* ``run_tool`` (ToolWorkerFunction): run a ``long_running`` tool and return ``{ok, output}``; for a ``callback``
  tool (invoked with a task token) record the token, run the tool's start, and return — the execution waits until
  the CallbackFunction sends the token's success or failure.
* ``save_result`` (ContinuationFunction, step "save"): replace the pending tool message with the result — only a
  still-pending message of a still-existing session is replaced — and invalidate the cache.
* ``continue_turn`` (step "continue"): a new turn, made the session's active turn, streams the assistant's
  continuation into the replay log (a resuming client sees it live) and is persisted like any turn.
* ``finish`` (step "finish"): mark the operation done (or leave it cancelled) and release its guard.
"""

from __future__ import annotations

from typing import Any

from chatcore.errors import ChatError, NotFound
from chatcore.observability import logger
from chatcore.operations import Operation, Operations
from chatcore.tools import ToolContext, ToolResult
from chatcore.turns import ChatEngine


def _require(engine: ChatEngine) -> Operations:
    operations = engine.deps.operations
    if operations is None:
        raise RuntimeError("STATE_MACHINE_ARN is not configured")
    return operations


def _context(engine: ChatEngine, operation: Operation) -> ToolContext:
    services = {
        "sessions": engine.deps.sessions,
        "llm": engine.deps.llm,
        "callback_url": engine.deps.settings.callback_url,
    }
    return ToolContext(operation.user_id, operation.session_id, services, operation_id=operation.operation_id)


async def run_tool(engine: ChatEngine, event: dict[str, Any]) -> dict[str, Any]:
    operations = _require(engine)
    token = event.get("task_token")
    operation = Operation.from_input(event["operation"] if token else event)
    record = await operations.get(operation.operation_id)
    if record is None or record.status == "cancelled":
        return {"ok": False, "output": {"error": "the operation was cancelled"}}
    ctx = _context(engine, operation)
    if token:
        if not await operations.wait_for_callback(operation.operation_id, str(token)):
            logger.info("callback already registered", operation_id=operation.operation_id)
        result = await engine.deps.tools.run(operation.tool_name, operation.arguments, ctx)
        if not result.ok:
            # The external job could not even be started: fail the wait at once.
            await operations.complete(operation.operation_id, error=str(result.output.get("error", "failed")))
        return {"ok": result.ok, "output": result.output}
    result = await engine.deps.tools.run(operation.tool_name, operation.arguments, ctx)
    return {"ok": result.ok, "output": result.output}


def _tool_result(result: dict[str, Any]) -> ToolResult:
    """The tool's result as the state machine hands it over: the worker's ``{ok, output}``, a callback's output,
    or the ``failure`` a Catch recorded."""
    if result.get("ok"):
        return ToolResult(True, result.get("output"))
    failure = result.get("failure") or {}
    if failure:
        error = str(failure.get("Error", "failed"))
        friendly = {
            "States.Timeout": "the background job timed out",
            "States.HeartbeatTimeout": "the external job stopped reporting progress",
            "ExternalJobFailed": "the external job reported a failure",
        }.get(error, "the background job failed")
        cause = str(failure.get("Cause", ""))[:500]
        return ToolResult(
            False, {"error": friendly, "detail": cause} if error == "ExternalJobFailed" else {"error": friendly}
        )
    output = result.get("output")
    return ToolResult(False, output if isinstance(output, dict) and "error" in output else {"error": "the tool failed"})


async def save_result(engine: ChatEngine, state: dict[str, Any]) -> dict[str, Any]:
    operations = _require(engine)
    operation = Operation.from_input(state)
    record = await operations.get(operation.operation_id)
    if record is None or record.status in ("cancelled", "done"):
        return {"saved": False}
    result = _tool_result(state.get("result") or {})
    message = result.to_message(operation.tool_call_id, operation.tool_name, operation_id=operation.operation_id)
    if await engine.deps.sessions.replace_pending(operation.session_id, operation.seq, message) is None:
        return {"saved": False}
    await operations.transition(operation.operation_id, "saved", expect={"running", "waiting", "completing"})
    return {"saved": True}


async def continue_turn(engine: ChatEngine, state: dict[str, Any]) -> dict[str, Any]:
    operation = Operation.from_input(state)
    record = await _require(engine).get(operation.operation_id)
    if record is None or record.status == "cancelled":
        return {"turn_id": None}
    try:
        handle = await engine.continue_session(operation.session_id, operation.user_id, depth=operation.depth)
    except NotFound:
        return {"turn_id": None}
    if handle.task is not None:
        await handle.task
    return {"turn_id": handle.turn_id}


async def finish(engine: ChatEngine, state: dict[str, Any]) -> dict[str, Any]:
    operations = _require(engine)
    operation_id = str(state["operation_id"])
    done = await operations.transition(
        operation_id, "done", expect={"starting", "running", "waiting", "completing", "saved"}
    )
    await operations.release_guard(operation_id)
    record = await operations.get(operation_id)
    return {"status": record.status if record else "unknown", "changed": done}


STEPS = {"save": save_result, "continue": continue_turn, "finish": finish}


async def continuation_step(engine: ChatEngine, event: dict[str, Any]) -> dict[str, Any]:
    step = STEPS.get(str(event.get("step")))
    if step is None:
        raise ValueError(f"unknown step {event.get('step')!r}")
    try:
        return await step(engine, event["state"])
    except ChatError as exc:
        logger.warning("operation step failed", step=event.get("step"), error=exc.message)
        raise
