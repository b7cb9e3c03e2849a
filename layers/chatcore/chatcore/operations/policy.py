"""``Operations``: the order of steps of an operation's life, over its record, its guard and its execution."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from chatcore.cache import RedisConnector
from chatcore.dynamo.table import Table
from chatcore.errors import Conflict, NotFound, ServiceRefused, ServiceUnavailable
from chatcore.observability import logger
from chatcore.operations.executions import Executions, StepFunctions, token_gone
from chatcore.operations.guard import OperationGuard
from chatcore.operations.model import UNFINISHED, Operation, OperationStatus
from chatcore.operations.records import OperationRecords
from chatcore.ports import ExecutionControl, OperationRecordStore, StartGuard

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


class Operations:
    """The policy over three ports (``chatcore.ports``): the record, the execution, the guard. ``build`` wires
    the production adapters; unit tests pass in-memory fakes."""

    def __init__(
        self,
        records: OperationRecordStore,
        executions: ExecutionControl,
        guard: StartGuard,
        *,
        timeouts: dict[str, int] | None = None,
    ) -> None:
        # Passed in each execution's input: the ASL reads them with TimeoutSecondsPath/HeartbeatSecondsPath.
        self.timeouts = timeouts or {
            "tool_timeout_seconds": 900,
            "callback_heartbeat_seconds": 3600,
            "callback_timeout_seconds": 86_400,
        }
        self.records = records
        self.executions = executions
        self.guard = guard

    @classmethod
    def build(
        cls,
        table_name: str,
        state_machine_arn: str,
        connector: RedisConnector,
        *,
        guard_seconds: int = 86_400,
        timeouts: dict[str, int] | None = None,
        db: Callable[[], DynamoDBClient],
        sfn: Callable[[], StepFunctions],
    ) -> Operations:
        return cls(
            OperationRecords(Table(table_name, client_factory=db)),
            Executions(state_machine_arn, sfn),
            OperationGuard(connector, seconds=guard_seconds),
            timeouts=timeouts,
        )

    @property
    def state_machine_arn(self) -> str:
        return self.executions.state_machine_arn

    @property
    def enabled(self) -> bool:
        return bool(self.state_machine_arn)

    async def get(self, operation_id: str) -> Operation | None:
        return await self.records.get(operation_id)

    async def transition(
        self, operation_id: str, to: OperationStatus, *, expect: set[str], extra: dict[str, Any] | None = None
    ) -> bool:
        """Move to ``to`` only from one of ``expect``; False when the record is elsewhere (or missing)."""
        return await self.records.transition(operation_id, to, expect=expect, extra=extra)

    async def claim_signature(self, digest: str, *, expires_at: int) -> bool:
        """Record a verified callback signature once; False when it was used before (a replayed request)."""
        return await self.records.claim_signature(digest, expires_at=expires_at)

    # -- start / stop ---------------------------------------------------------------------------------------

    async def start(self, operation: Operation) -> Operation:
        """Record and start the operation; a repeated start returns the existing one and starts nothing."""
        existing = await self.records.create(operation)
        if existing is not None:
            logger.info("operation already started", operation_id=operation.operation_id)
            return existing
        if not await self._take_guard(operation.operation_id):
            logger.warning("operation guard already held", operation_id=operation.operation_id)
            return operation
        try:
            arn = await self.executions.start(operation.operation_id, operation.execution_input() | self.timeouts)
        except ServiceRefused as exc:
            await self.transition(operation.operation_id, "failed", expect={"starting"})
            await self.release_guard(operation.operation_id)
            raise ServiceUnavailable("could not start the operation") from exc
        operation.execution_arn = arn
        await self.transition(operation.operation_id, "running", expect={"starting"}, extra={"execution_arn": arn})
        operation.status = "running"
        return operation

    def _execution_arn(self, operation_id: str) -> str:
        return self.executions.arn_of(operation_id)

    async def cancel_for_session(self, session_id: str) -> list[str]:
        """Stop every unfinished operation of a session (called before its items are deleted)."""
        stopped = []
        for operation_id in await self.records.of_session(session_id):
            if not await self.transition(operation_id, "cancelled", expect=set(UNFINISHED)):
                continue
            stopped.append(operation_id)
            if self.state_machine_arn:
                try:
                    await self.executions.stop(operation_id, error="SessionDeleted", cause="the session was deleted")
                except ServiceRefused as exc:
                    logger.warning("could not stop execution", operation_id=operation_id, error=repr(exc))
            await self.release_guard(operation_id)
        return stopped

    # -- callback tools -------------------------------------------------------------------------------------

    async def wait_for_callback(self, operation_id: str, task_token: str) -> bool:
        return await self.transition(operation_id, "waiting", expect={"running"}, extra={"task_token": task_token})

    async def _waiting(self, operation_id: str) -> tuple[Operation, str]:
        operation = await self.get(operation_id)
        if operation is None:
            raise NotFound("unknown operation")
        if operation.status != "waiting" or not operation.task_token:
            raise Conflict(f"operation is {operation.status}, not waiting for a callback")
        return operation, operation.task_token

    async def complete(self, operation_id: str, *, output: Any = None, error: str | None = None) -> Operation:
        """Hand an external completion to the waiting execution (exactly once)."""
        operation, token = await self._waiting(operation_id)
        if not await self.transition(operation_id, "completing", expect={"waiting"}):
            raise Conflict("operation was completed already")
        try:
            if error is None:
                await self.executions.succeed(token, {"ok": True, "output": output})
            else:
                await self.executions.fail(token, error="ExternalJobFailed", cause=error[:32_000])
        except ServiceRefused as exc:
            await self.transition(operation_id, "failed", expect={"completing"})
            if token_gone(exc):
                raise Conflict("the operation timed out or was stopped") from exc
            raise ServiceUnavailable("could not reach Step Functions") from exc
        operation.status = "completing"
        return operation

    async def heartbeat(self, operation_id: str) -> None:
        _operation, token = await self._waiting(operation_id)
        await self.executions.heartbeat(token)

    # -- guard ----------------------------------------------------------------------------------------------

    async def _take_guard(self, operation_id: str) -> bool:
        return await self.guard.take(operation_id)

    async def release_guard(self, operation_id: str) -> None:
        await self.guard.release(operation_id)
