"""Approval records (``chatcore.approvals``) in the session's partition: ``SESSION#<sid> / APPROVAL#<id>``.

The ``APPROVAL#`` prefix sorts before ``META``, so message reads never see these items, and a session's delete
sweeps them with the rest of its partition. Creating one requires the session to be alive; answering one is a
conditional update (still pending, before its deadline), so exactly one answer wins.
"""

from __future__ import annotations

from typing import cast

from chatcore.approvals import Approval, ApprovalState
from chatcore.dynamo.expressions import Expression
from chatcore.dynamo.keys import ABSENT, SESSION_ALIVE, Item, approval_key, meta_key, n_attr, s_attr
from chatcore.dynamo.table import Table
from chatcore.errors import NotFound, ServiceRefused
from chatcore.models import utcnow


def encode(approval: Approval) -> Item:
    item: Item = {
        **approval_key(approval.session_id, approval.approval_id),
        "approval_id": s_attr(approval.approval_id),
        "session_id": s_attr(approval.session_id),
        "tool_call_id": s_attr(approval.tool_call_id),
        "tool_name": s_attr(approval.tool_name),
        "arguments_digest": s_attr(approval.arguments_digest),
        "answer_id": s_attr(approval.answer_id),
        "deadline": n_attr(approval.deadline),
        "state": s_attr(approval.state),
    }
    if approval.reason is not None:
        item["reason"] = s_attr(approval.reason)
    if approval.run_id is not None:
        item["run_id"] = s_attr(approval.run_id)
    return item


def decode(item: Item) -> Approval:
    return Approval(
        approval_id=item["approval_id"]["S"],
        session_id=item["session_id"]["S"],
        tool_call_id=item["tool_call_id"]["S"],
        tool_name=item["tool_name"]["S"],
        arguments_digest=item["arguments_digest"]["S"],
        answer_id=item["answer_id"]["S"],
        deadline=int(item["deadline"]["N"]),
        state=cast(ApprovalState, item["state"]["S"]),
        reason=item.get("reason", {}).get("S"),
        run_id=item.get("run_id", {}).get("S"),
    )


class ApprovalStore:
    """``chatcore.ports.ApprovalRecords`` over the chat table."""

    def __init__(self, table: Table) -> None:
        self._table = table

    async def create(self, approval: Approval) -> None:
        item = encode(approval)
        if expires := self._table.session_expiry(utcnow()):
            item["expires_at"] = expires
        try:
            await self._table.transact(
                [
                    self._table.put_item(item, condition=ABSENT),
                    self._table.check_item(meta_key(approval.session_id), condition=SESSION_ALIVE),
                ]
            )
        except ServiceRefused as exc:
            if exc.cancelled and exc.condition_failed:
                raise NotFound("session was deleted") from exc
            raise

    async def get(self, session_id: str, approval_id: str) -> Approval | None:
        item = await self._table.get(approval_key(session_id, approval_id))
        return None if item is None else decode(item)

    async def answer(self, approval: Approval, *, now: int, before_deadline: bool = True) -> bool:
        """Record ``approval``'s answer (state, reason, run) if it is still pending (and, with
        ``before_deadline``, not expired); False when another answer won or it expired."""
        ex = Expression().set("state", s_attr(approval.state))
        if approval.reason is not None:
            ex.set("reason", s_attr(approval.reason))
        if approval.run_id is not None:
            ex.set("run_id", s_attr(approval.run_id))
        ex.require(ex.eq("state", s_attr("pending")))
        if before_deadline:
            ex.require(f"{ex.name('deadline')} > {ex.value(n_attr(now))}")
        key = approval_key(approval.session_id, approval.approval_id)
        return await self._table.update_if(key, ex) is not None
