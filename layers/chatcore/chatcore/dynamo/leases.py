"""The turn lease on META: one chat turn at a time per session.

``active_turn_id`` + ``active_turn_expires`` (epoch seconds) name the turn holding the session. A turn takes the
lease with one conditional write (refused while another unexpired lease is held), renews it while it runs (``renew``,
conditional on still holding it), makes its writes conditional on still holding it (``TurnGuard``, applied by
``hold``) and gives it back with its last write or ``release``. A turn that stopped renewing (its function crashed)
can be closed by another: ``take_lapsed`` moves its expired lease to the closer in one conditional write.
"""

from __future__ import annotations

from dataclasses import dataclass

from chatcore.dynamo.codecs import decode_meta, lease_of
from chatcore.dynamo.expressions import Expression
from chatcore.dynamo.fields import update_meta
from chatcore.dynamo.keys import SESSION_ALIVE, Item, meta_key, n_attr, s_attr
from chatcore.dynamo.reads import load_meta
from chatcore.dynamo.table import Table
from chatcore.errors import NotFound, ServiceRefused, TurnInProgress
from chatcore.models import ChatSession, utcnow

LEASE_ATTRIBUTES = ("active_turn_id", "active_turn_expires")


@dataclass(frozen=True)
class TurnGuard:
    """Make a write conditional on ``turn_id`` holding the session's lease; ``release`` gives it back.
    ``throttle_seconds``: how long the write's transaction is sent again while DynamoDB still refuses it for its
    rate after botocore's own retries (counted from the first such refusal; nothing of a refused request applied)."""

    turn_id: str
    release: bool = False
    throttle_seconds: float = 0.0

    def keep(self) -> TurnGuard:
        return TurnGuard(self.turn_id, release=False)


def hold(ex: Expression, turn: TurnGuard | None) -> None:
    """Make the write ``ex`` conditional on ``turn`` holding the lease, and give it back when ``turn.release``."""
    if turn is None:
        return
    ex.require(ex.eq("active_turn_id", s_attr(turn.turn_id)))
    if turn.release:
        ex.remove(*LEASE_ATTRIBUTES)


async def acquire(table: Table, session_id: str, turn_id: str, *, owner: str | None, lease_seconds: int) -> ChatSession:
    """Take the session's turn lease (one conditional write). Raises ``NotFound`` (missing, deleted, another
    user's) or ``TurnInProgress`` (an unexpired lease is held). Returns META as updated."""
    now = int(utcnow().timestamp())
    ex = Expression().increment("version")
    ex.set("active_turn_id", s_attr(turn_id)).set("active_turn_expires", n_attr(now + lease_seconds))
    ex.require(SESSION_ALIVE)
    if owner is not None:
        ex.require(ex.eq("user_id", s_attr(owner)))
    held_by, expires = ex.name("active_turn_id"), ex.name("active_turn_expires")
    ex.require(f"(attribute_not_exists({held_by}) OR {expires} < {ex.value(n_attr(now))})")
    try:
        item = await table.update(
            meta_key(session_id), ex, ReturnValues="ALL_NEW", ReturnValuesOnConditionCheckFailure="ALL_OLD"
        )
    except ServiceRefused as exc:
        if exc.aws_code != "ConditionalCheckFailedException":
            raise
        raise await _refusal(table, session_id, owner, exc.item) from exc
    return decode_meta(item)


async def _refusal(table: Table, session_id: str, owner: str | None, old: Item | None) -> NotFound | TurnInProgress:
    """Why the lease was refused (``old`` is META as the condition saw it)."""
    if old is not None:
        owner_now = old.get("user_id", {}).get("S")
        missing = "deleted_at" in old
    else:  # no item, or an endpoint that does not return it on failure
        meta = await load_meta(table, session_id)
        missing = meta is None
        owner_now = None if meta is None else meta.user_id
    if missing or (owner is not None and owner_now != owner):
        return NotFound("session not found")
    return TurnInProgress("another reply is still being generated in this session")


async def release(table: Table, session_id: str, turn_id: str) -> ChatSession | None:
    """Give the lease back if this turn still holds it; None when it did not."""
    ex = Expression()
    hold(ex, TurnGuard(turn_id, release=True))
    return await update_meta(table, session_id, ex)


async def renew(table: Table, session_id: str, turn_id: str, *, lease_seconds: int) -> bool:
    """Extend the lease while ``turn_id`` holds it (the version is not bumped: the turn's own writes are guarded by
    it); False when another turn took it, or it was released."""
    now = int(utcnow().timestamp())
    ex = Expression().set("active_turn_expires", n_attr(now + lease_seconds))
    ex.require(SESSION_ALIVE, ex.eq("active_turn_id", s_attr(turn_id)))
    return await table.update_if(meta_key(session_id), ex) is not None


async def take_lapsed(
    table: Table, session_id: str, turn_id: str, closer_id: str, *, lease_seconds: int
) -> ChatSession | None:
    """Move ``turn_id``'s lease to ``closer_id`` when it has lapsed (no renewal: its function is gone); META as
    updated, or None when ``turn_id`` does not hold a lapsed lease (it runs, ended, or was closed by another).

    META is read first: a follower asks this on every idle heartbeat and a stop or resume of a running turn asks it
    too, and in the usual case (the turn runs, or has ended) a read answers it; a refused conditional write would
    cost a write unit each time. The write's own conditions still decide a race."""
    now = int(utcnow().timestamp())
    held = await table.get(meta_key(session_id))
    if held is None or not _lapsed(held, turn_id, now):
        return None
    ex = Expression().increment("version")
    ex.set("active_turn_id", s_attr(closer_id)).set("active_turn_expires", n_attr(now + lease_seconds))
    ex.require(SESSION_ALIVE, ex.eq("active_turn_id", s_attr(turn_id)))
    ex.require(f"{ex.name('active_turn_expires')} < {ex.value(n_attr(now))}")
    item = await table.update_if(meta_key(session_id), ex, ReturnValues="ALL_NEW")
    return None if item is None else decode_meta(item)


def _lapsed(meta: Item, turn_id: str, now: int) -> bool:
    """``turn_id`` holds META's lease and it expired before ``now`` (the write's condition, read)."""
    turn, expires = lease_of(meta)
    return turn == turn_id and expires is not None and expires < now
