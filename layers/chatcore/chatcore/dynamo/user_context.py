"""The user context item: ``PK=USER#<uid>``, ``SK=CONTEXT`` — ``context`` (text), ``version``, ``updated_at``.

Every write bumps ``version``; a write given the version it expects is conditional on it (0: no item yet), so of
two devices editing from the same version one wins and the other gets ``Conflict``. Clearing keeps the item (empty
text, next version): versions never restart, so a cached older copy can never pass for the newest.
"""

from __future__ import annotations

from datetime import datetime

from chatcore.dynamo.codecs import iso
from chatcore.dynamo.expressions import Expression
from chatcore.dynamo.keys import ABSENT, Item, n_attr, s_attr, user_context_key
from chatcore.dynamo.table import Table
from chatcore.errors import Conflict, ServiceRefused
from chatcore.models import UserContext, utcnow


def decode(user_id: str, item: Item) -> UserContext:
    return UserContext(
        user_id=user_id,
        context=item.get("context", {}).get("S", ""),
        version=int(item["version"]["N"]),
        updated_at=datetime.fromisoformat(item["updated_at"]["S"]),
    )


async def load(table: Table, user_id: str) -> UserContext:
    """The stored context, or an empty one at version 0."""
    item = await table.get(user_context_key(user_id))
    return decode(user_id, item) if item else UserContext(user_id=user_id)


async def save(table: Table, user_id: str, text: str, *, expected_version: int | None) -> UserContext:
    """Store ``text`` as the next version. With ``expected_version``, only if that is the stored version (0: none
    stored); otherwise ``Conflict`` naming the stored version, and nothing is written."""
    ex = Expression().increment("version", from_zero=True)
    ex.set("context", s_attr(text)).set("updated_at", s_attr(iso(utcnow()))).set("user_id", s_attr(user_id))
    if expected_version == 0:
        ex.require(ABSENT)
    elif expected_version is not None:
        ex.require(ex.eq("version", n_attr(expected_version)))
    try:
        item = await table.update(
            user_context_key(user_id), ex, ReturnValues="ALL_NEW", ReturnValuesOnConditionCheckFailure="ALL_OLD"
        )
    except ServiceRefused as exc:
        if not exc.condition_failed:
            raise
        stored = int(exc.item["version"]["N"]) if exc.item else 0
        raise Conflict(
            f"the context changed since version {expected_version} was read",
            details=[{"loc": ["version"], "msg": f"the stored version is {stored}"}],
        ) from exc
    return decode(user_id, item)
