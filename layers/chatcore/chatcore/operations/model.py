"""An operation: one tool call of a ``long_running`` or ``callback`` tool, run by one Step Functions execution."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal

OperationStatus = Literal["starting", "running", "waiting", "completing", "saved", "done", "cancelled", "failed"]
ToolKindName = Literal["long_running", "callback"]
FINAL: frozenset[str] = frozenset({"done", "cancelled", "failed"})
UNFINISHED: frozenset[str] = frozenset({"starting", "running", "waiting", "completing", "saved"})


def operation_id_for(session_id: str, tool_call_id: str) -> str:
    """Stable across retries; a valid execution name (``[A-Za-z0-9_-]``, at most 80 characters)."""
    digest = hashlib.sha256(f"{session_id}\n{tool_call_id}".encode()).hexdigest()
    return f"op_{digest[:40]}"


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
