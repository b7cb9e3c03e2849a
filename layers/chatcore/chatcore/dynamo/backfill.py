"""Give sessions stored before the filtered listing indexes existed their keys: ``python -m chatcore.dynamo.backfill
<table>`` (AWS credentials and region from the environment), once, after the indexes are created.

Until then a session written before them (no ``GSI2PK``/``GSI3PK``) is missing from filtered listings
(``?status=``, ``?chat_type=``) until its next append, which writes the keys; unfiltered listings are unaffected.
Safe beside live traffic and to run again: a session is written only while it is alive, still lacks the keys and
still has the owner, chat type and status they are made of; its version is not bumped (nothing cached changes).
"""

from __future__ import annotations

import asyncio
import sys

from chatcore.dynamo.codecs import decode_meta
from chatcore.dynamo.expressions import Expression
from chatcore.dynamo.keys import META, SESSION_ALIVE, Item, filter_keys, meta_key, s_attr
from chatcore.dynamo.table import Table


async def backfill(table: Table) -> int:
    """Write the filtered indexes' keys of every live, owned session that lacks them; returns how many."""
    ex = Expression()
    ex.filter(
        ex.eq("SK", s_attr(META)),
        f"attribute_exists({ex.name('GSI1PK')})",
        f"attribute_not_exists({ex.name('GSI2PK')})",
        f"attribute_not_exists({ex.name('deleted_at')})",
    )
    written = 0
    async for items in table.scan(ex):
        for item in items:
            written += await _listed(table, item)
    return written


async def _listed(table: Table, item: Item) -> int:
    meta = decode_meta(item)
    if meta.user_id is None:
        return 0
    ex = Expression()
    for attribute, value in filter_keys(meta.user_id, meta.chat_type, meta.status).items():
        ex.set(attribute, value)
    ex.require(SESSION_ALIVE, f"attribute_not_exists({ex.name('GSI2PK')})", ex.eq("user_id", s_attr(meta.user_id)))
    for field in ("chat_type", "status"):  # as read; an item without one holds the default decode_meta gave
        ex.require(ex.eq(field, item[field]) if field in item else f"attribute_not_exists({ex.name(field)})")
    return 0 if await table.update_if(meta_key(meta.session_id), ex) is None else 1


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m chatcore.dynamo.backfill <table name>", file=sys.stderr)
        return 2
    from chatcore.aws import AwsClients

    clients = AwsClients()
    written = asyncio.run(backfill(Table(argv[0], client_factory=clients.dynamodb)))
    print(f"listing keys written: {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
