"""Step Functions executions of the ToolOperationStateMachine: start (named after the operation id, so a repeated
start is a no-op), stop, and the task-token calls of callback tools. Every call goes through ``chatcore.aws.call``."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol

from chatcore.aws import call
from chatcore.errors import Conflict, ServiceRefused

SERVICE = "Step Functions"
# Answers to a task-token call whose task is gone: it timed out, was stopped, or completed already.
TOKEN_GONE = frozenset({"TaskTimedOut", "InvalidToken", "TaskDoesNotExist"})


class StepFunctions(Protocol):
    """The Step Functions client methods used here (boto3's client fits)."""

    def start_execution(self, *, stateMachineArn: str, name: str, input: str) -> Any: ...
    def stop_execution(self, *, executionArn: str, error: str, cause: str) -> Any: ...
    def send_task_success(self, *, taskToken: str, output: str) -> Any: ...
    def send_task_failure(self, *, taskToken: str, error: str, cause: str) -> Any: ...
    def send_task_heartbeat(self, *, taskToken: str) -> Any: ...


def token_gone(exc: ServiceRefused) -> bool:
    return exc.aws_code in TOKEN_GONE


class Executions:
    def __init__(self, state_machine_arn: str, client_factory: Callable[[], StepFunctions]):
        self.state_machine_arn = state_machine_arn
        self._client_factory = client_factory

    @property
    def _sfn(self) -> StepFunctions:
        return self._client_factory()

    def arn_of(self, name: str) -> str:
        return self.state_machine_arn.replace(":stateMachine:", ":execution:") + f":{name}"

    async def start(self, name: str, execution_input: dict[str, Any]) -> str:
        """Start the execution ``name``; its ARN, also when it was started before."""
        try:
            result = await call(
                SERVICE,
                self._sfn.start_execution,
                stateMachineArn=self.state_machine_arn,
                name=name,
                input=json.dumps(execution_input),
            )
        except ServiceRefused as exc:
            if exc.aws_code != "ExecutionAlreadyExists":
                raise
            return self.arn_of(name)
        return str(result["executionArn"])

    async def stop(self, name: str, *, error: str, cause: str) -> None:
        await call(SERVICE, self._sfn.stop_execution, executionArn=self.arn_of(name), error=error, cause=cause)

    async def succeed(self, task_token: str, output: Any) -> None:
        await call(SERVICE, self._sfn.send_task_success, taskToken=task_token, output=json.dumps(output))

    async def fail(self, task_token: str, *, error: str, cause: str) -> None:
        await call(SERVICE, self._sfn.send_task_failure, taskToken=task_token, error=error, cause=cause)

    async def heartbeat(self, task_token: str) -> None:
        """Tell a waiting task it is alive; ``Conflict`` when the task is gone (any refusal)."""
        try:
            await call(SERVICE, self._sfn.send_task_heartbeat, taskToken=task_token)
        except ServiceRefused as exc:
            raise Conflict("the operation timed out or was stopped") from exc
