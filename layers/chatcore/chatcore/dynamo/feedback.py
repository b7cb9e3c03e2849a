"""Feedback items in the session's partition: ``SK=FEEDBACK#<turn id>``, one per answer (a PUT replaces it).

``FEEDBACK#`` sorts before ``META``, so a session read (``META`` .. ``MSG#~``) never sees them; deleting the session
sweeps them with the rest of its partition.
"""

from __future__ import annotations

from datetime import datetime

from chatcore.dynamo.codecs import iso
from chatcore.dynamo.expressions import Expression
from chatcore.dynamo.keys import SESSION_ALIVE, Item, feedback_key, meta_key, s_attr
from chatcore.dynamo.table import Table
from chatcore.errors import NotFound, ServiceRefused
from chatcore.models import Feedback, utcnow


def encode(session_id: str, feedback: Feedback) -> Item:
    item: Item = {
        **feedback_key(session_id, feedback.turn_id),
        "turn_id": s_attr(feedback.turn_id),
        "rating": s_attr(feedback.rating),
        "updated_at": s_attr(iso(feedback.updated_at)),
    }
    if feedback.comment:
        item["comment"] = s_attr(feedback.comment)
    return item


def decode(item: Item) -> Feedback:
    return Feedback(
        turn_id=item["turn_id"]["S"],
        rating=item["rating"]["S"],
        comment=item.get("comment", {}).get("S"),
        updated_at=datetime.fromisoformat(item["updated_at"]["S"]),
    )


async def put(table: Table, session_id: str, feedback: Feedback, *, owner: str) -> None:
    """Store (or replace) the feedback, in one transaction with a check that the session still exists and is
    ``owner``'s: feedback is never written beside a deleted session's tombstone. ``NotFound`` otherwise."""
    item = encode(session_id, feedback)
    if expires := table.session_expiry(utcnow()):
        item["expires_at"] = expires
    alive = Expression()
    alive.require(SESSION_ALIVE, alive.eq("user_id", s_attr(owner)))
    try:
        await table.transact(
            [table.check_item(meta_key(session_id), condition=alive), table.put_item(item, condition=None)]
        )
    except ServiceRefused as exc:
        if exc.cancelled and exc.condition_failed:
            raise NotFound("session not found") from exc
        raise


async def delete(table: Table, session_id: str, turn_id: str) -> bool:
    """Remove the feedback of the answer ``turn_id``; False when there was none."""
    return await table.delete(feedback_key(session_id, turn_id)) is not None


async def of_turns(table: Table, session_id: str, turn_ids: list[str]) -> dict[str, Feedback]:
    """The feedback stored for these answers, by turn id (exact keys: a page costs what it shows)."""
    if not turn_ids:
        return {}
    items = await table.get_many([feedback_key(session_id, turn_id) for turn_id in dict.fromkeys(turn_ids)])
    return {found.turn_id: found for found in map(decode, items)}
