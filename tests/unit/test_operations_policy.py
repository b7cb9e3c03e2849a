"""The long-running tool policy (``Operations``) against in-memory fakes of its record store, executions and guard:
the order of steps, and that each is done once."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from chatcore.errors import Conflict, NotFound, ServiceUnavailable
from chatcore.operations import Operation, Operations, operation_id_for
from tests.unit.fakes import FakeExecutions, InMemoryGuard, InMemoryRecords

pytestmark = pytest.mark.anyio


@dataclass
class Parts:
    operations: Operations
    records: InMemoryRecords
    executions: FakeExecutions
    guard: InMemoryGuard


@pytest.fixture
def parts() -> Parts:
    records, executions, guard = InMemoryRecords(), FakeExecutions(), InMemoryGuard()
    timeouts = {"tool_timeout_seconds": 60, "callback_heartbeat_seconds": 30, "callback_timeout_seconds": 600}
    return Parts(Operations(records, executions, guard, timeouts=timeouts), records, executions, guard)


def _operation(call: str = "call_1", session: str = "s1", kind: str = "long_running") -> Operation:
    return Operation(
        operation_id=operation_id_for(session, call),
        session_id=session,
        user_id="alice",
        tool_name="summarize_conversation",
        tool_call_id=call,
        arguments="{}",
        kind=kind,
        seq=3,
    )


async def test_start_records_guards_starts_then_marks_running(parts: Parts):
    operation = _operation()
    started = await parts.operations.start(operation)
    assert started.status == "running" and started.execution_arn == parts.executions.arn_of(operation.operation_id)
    execution_input = parts.executions.started[operation.operation_id]
    assert execution_input["session_id"] == "s1" and execution_input["tool_timeout_seconds"] == 60
    assert parts.records.records[operation.operation_id].status == "running"
    assert operation.operation_id in parts.guard.held


async def test_a_repeated_start_starts_nothing(parts: Parts):
    await parts.operations.start(_operation())
    again = await parts.operations.start(_operation())
    assert again.status == "running" and len(parts.executions.started) == 1


async def test_a_held_guard_starts_nothing(parts: Parts):
    operation = _operation()
    parts.guard.held.add(operation.operation_id)  # another starter is on it
    await parts.operations.start(operation)
    assert parts.executions.started == {}


async def test_a_refused_start_fails_the_record_and_frees_the_guard(parts: Parts):
    parts.executions.refuse = "AccessDeniedException"
    operation = _operation()
    with pytest.raises(ServiceUnavailable):
        await parts.operations.start(operation)
    assert parts.records.records[operation.operation_id].status == "failed"
    assert operation.operation_id not in parts.guard.held


async def test_cancel_for_session_stops_only_unfinished_ones(parts: Parts):
    running, done, other = _operation("a"), _operation("b"), _operation("c", session="s2")
    for operation in (running, done, other):
        await parts.operations.start(operation)
    await parts.operations.transition(done.operation_id, "done", expect={"running"})
    stopped = await parts.operations.cancel_for_session("s1")
    assert stopped == [running.operation_id] and parts.executions.stopped == [running.operation_id]
    assert parts.records.records[running.operation_id].status == "cancelled"
    assert parts.records.records[other.operation_id].status == "running"
    assert running.operation_id not in parts.guard.held


async def test_a_stop_that_fails_still_cancels(parts: Parts):
    operation = _operation()
    await parts.operations.start(operation)
    parts.executions.refuse = "ExecutionDoesNotExist"
    assert await parts.operations.cancel_for_session("s1") == [operation.operation_id]
    assert parts.records.records[operation.operation_id].status == "cancelled"


async def test_a_callback_completes_exactly_once(parts: Parts):
    operation = _operation(kind="callback")
    await parts.operations.start(operation)
    assert await parts.operations.wait_for_callback(operation.operation_id, "token-1")
    await parts.operations.heartbeat(operation.operation_id)
    done = await parts.operations.complete(operation.operation_id, output={"x": 1})
    assert done.status == "completing"
    assert parts.executions.sent == [
        ("heartbeat", "token-1", None),
        ("success", "token-1", {"ok": True, "output": {"x": 1}}),
    ]
    with pytest.raises(Conflict):
        await parts.operations.complete(operation.operation_id, output={"x": 2})
    with pytest.raises(Conflict):
        await parts.operations.heartbeat(operation.operation_id)
    with pytest.raises(NotFound):
        await parts.operations.complete("op_" + "0" * 40)


async def test_a_callback_whose_task_is_gone_is_a_conflict_and_fails_the_record(parts: Parts):
    operation = _operation(kind="callback")
    await parts.operations.start(operation)
    await parts.operations.wait_for_callback(operation.operation_id, "token-1")
    parts.executions.refuse = "TaskTimedOut"
    with pytest.raises(Conflict):
        await parts.operations.complete(operation.operation_id, error="late")
    assert parts.records.records[operation.operation_id].status == "failed"


async def test_signatures_are_claimed_once(parts: Parts):
    assert await parts.operations.claim_signature("d1", expires_at=1)
    assert not await parts.operations.claim_signature("d1", expires_at=1)
