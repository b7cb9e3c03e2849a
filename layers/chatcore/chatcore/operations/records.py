"""Operation records in the chat table (DynamoDB).

    OP#<operation_id> / META           the operation: session, tool, arguments, status, pending message seq,
                                       execution ARN, task token (callback tools), TTL
    SESSION#<sid> / OP#<operation_id>  a marker in the session, so a delete finds and stops its operations
    CALLBACK#<digest> / SIGNATURE      a callback signature already used (a replayed request is refused)

Creating a record is the guard of record against a double start: a conditional transaction that also requires
the session to exist and not be deleted.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from chatcore.dynamo.codecs import iso
from chatcore.dynamo.expressions import Expression
from chatcore.dynamo.keys import (
    ABSENT,
    OP_PREFIX,
    SESSION_ALIVE,
    Item,
    callback_key,
    meta_key,
    n_attr,
    operation_key,
    operation_marker_key,
    pk,
    s_attr,
)
from chatcore.dynamo.table import Table
from chatcore.errors import NotFound, ServiceRefused, ServiceUnavailable
from chatcore.models import utcnow
from chatcore.operations.model import Operation, OperationStatus

RECORD_DAYS = 30


def encode(operation: Operation, expires_at: dict[str, str]) -> Item:
    item: Item = {
        **operation_key(operation.operation_id),
        "operation_id": s_attr(operation.operation_id),
        "session_id": s_attr(operation.session_id),
        "tool_name": s_attr(operation.tool_name),
        "tool_call_id": s_attr(operation.tool_call_id),
        "arguments": s_attr(operation.arguments),
        "kind": s_attr(operation.kind),
        "seq": n_attr(operation.seq),
        "depth": n_attr(operation.depth),
        "status": s_attr(operation.status),
        "created_at": s_attr(iso(utcnow())),
        "expires_at": expires_at,
    }
    if operation.user_id:
        item["user_id"] = s_attr(operation.user_id)
    return item


def decode(item: Item) -> Operation:
    return Operation(
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


class OperationRecords:
    def __init__(self, table: Table) -> None:
        self._table = table

    async def get(self, operation_id: str) -> Operation | None:
        item = await self._table.get(operation_key(operation_id))
        return decode(item) if item else None

    async def create(self, operation: Operation) -> Operation | None:
        """Record a new operation and its marker in the session; None when created, the existing record when it
        was created before. ``NotFound`` when the session is missing or deleted."""
        expires = n_attr(int((utcnow() + timedelta(days=RECORD_DAYS)).timestamp()))
        marker = {
            **operation_marker_key(operation.session_id, operation.operation_id),
            "operation_id": s_attr(operation.operation_id),
            "expires_at": expires,
        }
        table = self._table
        try:
            await table.transact(
                [
                    table.put_item(encode(operation, expires), condition=ABSENT),
                    table.put_item(marker, condition=ABSENT),
                    # The session must still exist: a deleted session gets no new operation.
                    table.check_item(meta_key(operation.session_id), condition=SESSION_ALIVE),
                ]
            )
        except ServiceRefused as exc:
            if exc.reasons and exc.reasons[0] == "ConditionalCheckFailed":
                existing = await self.get(operation.operation_id)
                if existing is not None:
                    return existing
            if len(exc.reasons) > 2 and exc.reasons[2] == "ConditionalCheckFailed":
                raise NotFound("session not found") from exc
            raise ServiceUnavailable("could not record the operation") from exc
        return None

    async def transition(
        self, operation_id: str, to: OperationStatus, *, expect: set[str], extra: dict[str, Any] | None = None
    ) -> bool:
        """Move to ``to`` only from one of ``expect``; False when the record is elsewhere (or missing)."""
        ex = Expression().set("status", s_attr(to)).set("updated_at", s_attr(iso(utcnow())))
        for name, value in (extra or {}).items():
            ex.set(name, s_attr(value))
        ex.require("attribute_exists(PK)", ex.one_of("status", [s_attr(status) for status in sorted(expect)]))
        return await self._table.update_if(operation_key(operation_id), ex) is not None

    async def of_session(self, session_id: str) -> list[str]:
        """The ids of every operation the session's markers name."""
        ex = Expression()
        ex.key(ex.eq("PK", s_attr(pk(session_id))), f"begins_with({ex.name('SK')}, {ex.value(s_attr(OP_PREFIX))})")
        return [marker["operation_id"]["S"] for marker in await self._table.query(ex)]

    async def claim_signature(self, digest: str, *, expires_at: int) -> bool:
        """Record a verified callback signature once; False when it was used before (a replayed request)."""
        return await self._table.put_new({**callback_key(digest), "expires_at": n_attr(expires_at)})
