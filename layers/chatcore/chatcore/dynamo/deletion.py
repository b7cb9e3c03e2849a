"""Deleting a session: tombstone META, then sweep every other item of its partition.

The tombstone (``deleted_at``, GSI keys and user content removed) makes later writes fail instead of recreating
the session (their condition is ``SESSION_ALIVE``); it expires after ``TOMBSTONE_DAYS``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from chatcore.dynamo.codecs import iso
from chatcore.dynamo.expressions import Expression
from chatcore.dynamo.keys import LISTING_KEYS, META, TOMBSTONE_DAYS, meta_key, n_attr, pk, s_attr
from chatcore.dynamo.table import Table
from chatcore.models import utcnow


async def delete(
    table: Table,
    session_id: str,
    *,
    owner: str | None = None,
    before_sweep: Callable[[str], Awaitable[Any]] | None = None,
) -> bool:
    """Tombstone META, then remove every other item of the session.

    Returns False when the session does not exist for ``owner`` (a repeated delete also sweeps again, so a
    delete cut short by a crash is finished by the retry; it returns False too).
    """
    now = utcnow()
    ex = Expression().set_if_absent("deleted_at", s_attr(iso(now)))
    ex.set("expires_at", n_attr(int((now + timedelta(days=TOMBSTONE_DAYS)).timestamp())))
    ex.remove(*LISTING_KEYS, "title", "metadata")
    ex.require("attribute_exists(PK)")
    if owner is not None:
        ex.require(ex.eq("user_id", s_attr(owner)))
    old = await table.update_if(meta_key(session_id), ex, ReturnValues="ALL_OLD")
    if old is None:
        return False
    if before_sweep is not None:  # e.g. stop running operations (their markers are swept next)
        await before_sweep(session_id)
    await sweep(table, session_id)
    return "deleted_at" not in old


async def sweep(table: Table, session_id: str) -> None:
    """Delete every item of the session's partition but META (the tombstone)."""
    ex = Expression()
    ex.key(ex.eq("PK", s_attr(pk(session_id))))
    async for page in table.pages(ex, ProjectionExpression="PK, SK", ConsistentRead=True):
        await table.delete_all([item for item in page.get("Items", []) if item["SK"]["S"] != META])
