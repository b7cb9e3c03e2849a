"""Long-running tool operations: their records, their guard, and their Step Functions executions.

One operation = one tool call of a ``long_running`` or ``callback`` tool = one execution of the
ToolOperationStateMachine, named after the operation id (a repeated start is a no-op: Step Functions refuses a
second execution with the same name). The id is derived from the session and the tool call id, so every retry of
the same start computes the same id.

Records (DynamoDB, same table):

    OP#<operation_id> / META           the operation: session, tool, arguments, status, pending message seq,
                                       execution ARN, task token (callback tools), TTL
    SESSION#<sid> / OP#<operation_id>  a marker in the session, so a delete finds and stops its operations

Status: starting → running → (waiting → completing, callback tools) → saved → done; or cancelled / failed.

Guards against a double start, in order: the conditional create of the record (the guard of record), the Redis
``SET NX`` on ``chat:op:{id}`` (a fast filter held while the operation runs, released at its end), and the
execution name. With Redis down the first and last still hold, so the start goes ahead; with DynamoDB down
nothing is started (fail closed) and the tool call gets an error result.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from botocore.exceptions import ClientError

from chatcore.aws import dynamodb_client, stepfunctions_client
from chatcore.cache import RedisClient, RedisConnector
from chatcore.dynamo import in_thread, iso, pk
from chatcore.errors import Conflict, NotFound, ServiceUnavailable
from chatcore.models import utcnow
from chatcore.observability import logger

OperationStatus = Literal["starting", "running", "waiting", "completing", "saved", "done", "cancelled", "failed"]
ToolKindName = Literal["long_running", "callback"]
FINAL: frozenset[str] = frozenset({"done", "cancelled", "failed"})
RECORD_DAYS = 30
SESSION_ALIVE = "attribute_exists(PK) AND attribute_not_exists(deleted_at)"


def operation_id_for(session_id: str, tool_call_id: str) -> str:
    """Stable across retries; a valid execution name (``[A-Za-z0-9_-]``, at most 80 characters)."""
    digest = hashlib.sha256(f"{session_id}\n{tool_call_id}".encode()).hexdigest()
    return f"op_{digest[:40]}"


def guard_key(operation_id: str) -> str:
    return f"chat:op:{operation_id}"


def _op_key(operation_id: str) -> dict[str, Any]:
    return {"PK": {"S": f"OP#{operation_id}"}, "SK": {"S": "META"}}


@dataclass
class Operation:
    operation_id: str
    session_id: str
    user_id: str | None
    tool_name: str
    tool_call_id: str
    arguments: str
    kind: ToolKindName
    seq: int
    depth: int = 0
    status: OperationStatus = "starting"
    execution_arn: str | None = None
    task_token: str | None = field(default=None, repr=False)

    def execution_input(self) -> dict[str, Any]:
        return {
            "operation_id": self.operation_id,
            "session_id": self.session_id,
            "user_id": self.user_id,
            "tool_name": self.tool_name,
            "tool_call_id": self.tool_call_id,
            "arguments": self.arguments,
            "kind": self.kind,
            "seq": self.seq,
            "depth": self.depth,
        }

    def item(self) -> dict[str, Any]:
        now = utcnow()
        item: dict[str, Any] = {
            **_op_key(self.operation_id),
            "operation_id": {"S": self.operation_id},
            "session_id": {"S": self.session_id},
            "tool_name": {"S": self.tool_name},
            "tool_call_id": {"S": self.tool_call_id},
            "arguments": {"S": self.arguments},
            "kind": {"S": self.kind},
            "seq": {"N": str(self.seq)},
            "depth": {"N": str(self.depth)},
            "status": {"S": self.status},
            "created_at": {"S": iso(now)},
            "expires_at": {"N": str(int((now + timedelta(days=RECORD_DAYS)).timestamp()))},
        }
        if self.user_id:
            item["user_id"] = {"S": self.user_id}
        return item

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Operation:
        return cls(
            operation_id=item["operation_id"]["S"],
            session_id=item["session_id"]["S"],
            user_id=item.get("user_id", {}).get("S"),
            tool_name=item["tool_name"]["S"],
            tool_call_id=item["tool_call_id"]["S"],
            arguments=item["arguments"]["S"],
            kind=item["kind"]["S"],
            seq=int(item["seq"]["N"]),
            depth=int(item.get("depth", {}).get("N", "0")),
            status=item["status"]["S"],
            execution_arn=item.get("execution_arn", {}).get("S"),
            task_token=item.get("task_token", {}).get("S"),
        )

    @classmethod
    def from_input(cls, data: dict[str, Any]) -> Operation:
        return cls(
            operation_id=str(data["operation_id"]),
            session_id=str(data["session_id"]),
            user_id=data.get("user_id"),
            tool_name=str(data["tool_name"]),
            tool_call_id=str(data["tool_call_id"]),
            arguments=str(data.get("arguments") or "{}"),
            kind=data["kind"],
            seq=int(data["seq"]),
            depth=int(data.get("depth", 0)),
        )


class Operations:
    def __init__(
        self,
        table_name: str,
        state_machine_arn: str,
        connector: RedisConnector,
        *,
        guard_seconds: int = 86_400,
        timeouts: dict[str, int] | None = None,
        db: Callable[[], Any] = dynamodb_client,
        sfn: Callable[[], Any] = stepfunctions_client,
    ) -> None:
        # Passed in each execution's input: the ASL reads them with TimeoutSecondsPath/HeartbeatSecondsPath.
        self.timeouts = timeouts or {
            "tool_timeout_seconds": 900,
            "callback_heartbeat_seconds": 3600,
            "callback_timeout_seconds": 86_400,
        }
        self.table_name = table_name
        self.state_machine_arn = state_machine_arn
        self._redis = connector
        self._guard_seconds = guard_seconds
        self._db = db
        self._sfn = sfn

    @property
    def enabled(self) -> bool:
        return bool(self.state_machine_arn)

    # -- records --------------------------------------------------------------------------------------------

    async def get(self, operation_id: str) -> Operation | None:
        try:
            found = await in_thread(
                self._db().get_item, TableName=self.table_name, Key=_op_key(operation_id), ConsistentRead=True
            )
        except ClientError as exc:
            raise ServiceUnavailable("DynamoDB request failed") from exc
        item = found.get("Item")
        return Operation.from_item(item) if item else None

    async def transition(
        self, operation_id: str, to: OperationStatus, *, expect: set[str], extra: dict[str, Any] | None = None
    ) -> bool:
        """Move to ``to`` only from one of ``expect``; False when the record is elsewhere (or missing)."""
        values: dict[str, Any] = {":to": {"S": to}, ":now": {"S": iso(utcnow())}}
        names = {"#st": "status"}
        sets = ["#st = :to", "updated_at = :now"]
        for index, (name, value) in enumerate((extra or {}).items()):
            values[f":x{index}"] = {"S": value}
            sets.append(f"{name} = :x{index}")
        allowed = []
        for index, status in enumerate(sorted(expect)):
            values[f":e{index}"] = {"S": status}
            allowed.append(f":e{index}")
        try:
            await in_thread(
                self._db().update_item,
                TableName=self.table_name,
                Key=_op_key(operation_id),
                UpdateExpression="SET " + ", ".join(sets),
                ConditionExpression=f"attribute_exists(PK) AND #st IN ({', '.join(allowed)})",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise ServiceUnavailable("DynamoDB request failed") from exc
        return True

    # -- start / stop ---------------------------------------------------------------------------------------

    async def start(self, operation: Operation) -> Operation:
        """Record and start the operation; a repeated start returns the existing one and starts nothing."""
        marker = {
            "PK": {"S": pk(operation.session_id)},
            "SK": {"S": f"OP#{operation.operation_id}"},
            "operation_id": {"S": operation.operation_id},
            "expires_at": operation.item()["expires_at"],
        }
        try:
            await in_thread(
                self._db().transact_write_items,
                TransactItems=[
                    {
                        "Put": {
                            "TableName": self.table_name,
                            "Item": operation.item(),
                            "ConditionExpression": "attribute_not_exists(PK)",
                        }
                    },
                    {
                        "Put": {
                            "TableName": self.table_name,
                            "Item": marker,
                            "ConditionExpression": "attribute_not_exists(PK)",
                        }
                    },
                    # The session must still exist: a deleted session gets no new operation.
                    {
                        "ConditionCheck": {
                            "TableName": self.table_name,
                            "Key": {"PK": {"S": pk(operation.session_id)}, "SK": {"S": "META"}},
                            "ConditionExpression": "attribute_exists(PK) AND attribute_not_exists(deleted_at)",
                        }
                    },
                ],
            )
        except ClientError as exc:
            reasons = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
            if reasons and reasons[0] == "ConditionalCheckFailed":
                existing = await self.get(operation.operation_id)
                if existing is not None:
                    logger.info("operation already started", operation_id=operation.operation_id)
                    return existing
            if len(reasons) > 2 and reasons[2] == "ConditionalCheckFailed":
                raise NotFound("session not found") from exc
            raise ServiceUnavailable("could not record the operation") from exc
        if not await self._take_guard(operation.operation_id):
            logger.warning("operation guard already held", operation_id=operation.operation_id)
            return operation
        try:
            result = await in_thread(
                self._sfn().start_execution,
                stateMachineArn=self.state_machine_arn,
                name=operation.operation_id,
                input=json.dumps(operation.execution_input() | self.timeouts),
            )
            arn = result["executionArn"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ExecutionAlreadyExists":
                await self.transition(operation.operation_id, "failed", expect={"starting"})
                await self.release_guard(operation.operation_id)
                raise ServiceUnavailable("could not start the operation") from exc
            arn = self._execution_arn(operation.operation_id)
        operation.execution_arn = arn
        await self.transition(operation.operation_id, "running", expect={"starting"}, extra={"execution_arn": arn})
        operation.status = "running"
        return operation

    def _execution_arn(self, operation_id: str) -> str:
        return self.state_machine_arn.replace(":stateMachine:", ":execution:") + f":{operation_id}"

    async def cancel_for_session(self, session_id: str) -> list[str]:
        """Stop every unfinished operation of a session (called before its items are deleted)."""
        try:
            page = await in_thread(
                self._db().query,
                TableName=self.table_name,
                KeyConditionExpression="PK = :pk AND begins_with(SK, :op)",
                ExpressionAttributeValues={":pk": {"S": pk(session_id)}, ":op": {"S": "OP#"}},
                ConsistentRead=True,
            )
        except ClientError as exc:
            raise ServiceUnavailable("DynamoDB request failed") from exc
        stopped = []
        for marker in page.get("Items", []):
            operation_id = marker["operation_id"]["S"]
            unfinished = {"starting", "running", "waiting", "completing", "saved"}
            if not await self.transition(operation_id, "cancelled", expect=unfinished):
                continue
            stopped.append(operation_id)
            if self.state_machine_arn:
                try:
                    await in_thread(
                        self._sfn().stop_execution,
                        executionArn=self._execution_arn(operation_id),
                        error="SessionDeleted",
                        cause="the session was deleted",
                    )
                except ClientError as exc:
                    logger.warning("could not stop execution", operation_id=operation_id, error=repr(exc))
            await self.release_guard(operation_id)
        return stopped

    # -- callback tools -------------------------------------------------------------------------------------

    async def wait_for_callback(self, operation_id: str, task_token: str) -> bool:
        return await self.transition(operation_id, "waiting", expect={"running"}, extra={"task_token": task_token})

    async def complete(self, operation_id: str, *, output: Any = None, error: str | None = None) -> Operation:
        """Hand an external completion to the waiting execution (exactly once)."""
        operation = await self.get(operation_id)
        if operation is None:
            raise NotFound("unknown operation")
        if operation.status != "waiting" or not operation.task_token:
            raise Conflict(f"operation is {operation.status}, not waiting for a callback")
        if not await self.transition(operation_id, "completing", expect={"waiting"}):
            raise Conflict("operation was completed already")
        try:
            if error is None:
                await in_thread(
                    self._sfn().send_task_success,
                    taskToken=operation.task_token,
                    output=json.dumps({"ok": True, "output": output}),
                )
            else:
                await in_thread(
                    self._sfn().send_task_failure,
                    taskToken=operation.task_token,
                    error="ExternalJobFailed",
                    cause=error[:32_000],
                )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            await self.transition(operation_id, "failed", expect={"completing"})
            if code in ("TaskTimedOut", "InvalidToken", "TaskDoesNotExist"):
                raise Conflict("the operation timed out or was stopped") from exc
            raise ServiceUnavailable("could not reach Step Functions") from exc
        operation.status = "completing"
        return operation

    async def heartbeat(self, operation_id: str) -> None:
        operation = await self.get(operation_id)
        if operation is None:
            raise NotFound("unknown operation")
        if operation.status != "waiting" or not operation.task_token:
            raise Conflict(f"operation is {operation.status}, not waiting for a callback")
        try:
            await in_thread(self._sfn().send_task_heartbeat, taskToken=operation.task_token)
        except ClientError as exc:
            raise Conflict("the operation timed out or was stopped") from exc

    async def claim_signature(self, digest: str, *, expires_at: int) -> bool:
        """Record a verified callback signature once; False when it was used before (a replayed request)."""
        try:
            await in_thread(
                self._db().put_item,
                TableName=self.table_name,
                Item={
                    "PK": {"S": f"CALLBACK#{digest}"},
                    "SK": {"S": "SIGNATURE"},
                    "expires_at": {"N": str(expires_at)},
                },
                ConditionExpression="attribute_not_exists(PK)",
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise ServiceUnavailable("DynamoDB request failed") from exc
        return True

    # -- guard ----------------------------------------------------------------------------------------------

    async def _take_guard(self, operation_id: str) -> bool:
        async def call(client: RedisClient) -> bool:
            return bool(await client.set(guard_key(operation_id), "1", nx=True, ex=self._guard_seconds))

        # Redis down: True — the record and the execution name still make the start happen once.
        return await self._redis.run("operation.guard", call, True)

    async def release_guard(self, operation_id: str) -> None:
        async def call(client: RedisClient) -> None:
            await client.delete(guard_key(operation_id))

        await self._redis.run("operation.release", call, None)
