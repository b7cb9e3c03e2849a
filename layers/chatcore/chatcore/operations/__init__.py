"""Long-running tool operations: their records, their guard, and their Step Functions executions.

One operation = one tool call of a ``long_running`` or ``callback`` tool = one execution of the
ToolOperationStateMachine, named after the operation id (a repeated start is a no-op: Step Functions refuses a
second execution with the same name). The id is derived from the session and the tool call id, so every retry of
the same start computes the same id.

Status: starting → running → (waiting → completing, callback tools) → saved → done; or cancelled / failed.

Guards against a double start, in order: the conditional create of the record (the guard of record), the Redis
``SET NX`` on ``chat:op:{id}`` (a fast filter held while the operation runs, released at its end), and the
execution name. With Redis down the first and last still hold, so the start goes ahead; with DynamoDB down
nothing is started (fail closed) and the tool call gets an error result.

Modules: ``model`` (the operation, its id), ``records`` (DynamoDB: the record, the session's marker, used callback
signatures), ``guard`` (Redis), ``executions`` (Step Functions), and ``policy`` (``Operations``: the order of
those steps in start, cancel, complete and heartbeat).
"""

from chatcore.operations.guard import guard_key
from chatcore.operations.model import FINAL, Operation, OperationStatus, ToolKindName, operation_id_for
from chatcore.operations.policy import Operations

__all__ = ["FINAL", "Operation", "OperationStatus", "Operations", "ToolKindName", "guard_key", "operation_id_for"]
