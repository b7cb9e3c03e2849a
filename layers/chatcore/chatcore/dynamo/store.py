"""``SessionStore``: the session repository over the DynamoDB table, one method per operation.

The work is done by the modules beside this one (``reads``, ``appends``, ``leases``, ``fields``, ``deletion``);
this facade only holds the table. Every method raises ``chatcore.errors`` types only, and every write is
conditional (see ``chatcore.dynamo``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from chatcore.dynamo import appends, deletion, feedback, fields, leases, reads, user_context
from chatcore.dynamo.leases import TurnGuard
from chatcore.dynamo.table import Table
from chatcore.models import ChatMessage, ChatSession, Feedback, UserContext

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

__all__ = ["SessionStore", "TurnGuard"]


class SessionStore:
    def __init__(
        self,
        table_name: str,
        *,
        client_factory: Callable[[], DynamoDBClient],
        session_ttl_days: int = 0,
    ) -> None:
        self.table_name = table_name
        self._table = Table(table_name, client_factory=client_factory, session_ttl_days=session_ttl_days)

    # -- reads ----------------------------------------------------------------------------------------------

    async def load_meta(self, session_id: str) -> ChatSession | None:
        """The session without its messages, or None when missing or deleted."""
        return await reads.load_meta(self._table, session_id)

    async def load(self, session_id: str) -> ChatSession | None:
        """The whole session; None when missing or deleted."""
        return await reads.load(self._table, session_id)

    async def load_working_set(self, session_id: str) -> ChatSession | None:
        """What a turn reads: META and the recent part of the active path (``reads.load_working_set``)."""
        return await reads.load_working_set(self._table, session_id)

    async def load_tree(self, session_id: str) -> tuple[ChatSession, list[ChatMessage]] | None:
        """META and every stored message of every branch, by seq; None when missing or deleted."""
        return await reads.load_tree(self._table, session_id)

    async def list_for_user(
        self,
        user_id: str,
        *,
        limit: int,
        start_after: tuple[str, str] | None = None,
        status: str | None = None,
        chat_type: str | None = None,
    ) -> tuple[list[ChatSession], tuple[str, str] | None]:
        """Sessions of ``user_id`` newest first, and the cursor of the next page."""
        return await reads.list_for_user(
            self._table, user_id, limit=limit, start_after=start_after, status=status, chat_type=chat_type
        )

    # -- writes ---------------------------------------------------------------------------------------------

    async def save(self, session: ChatSession, *, turn: TurnGuard | None = None) -> ChatSession:
        """Create the session or append its unsaved messages and changed fields; returns the stored state."""
        return await appends.save(self._table, session, turn=turn)

    async def replace_pending(self, session_id: str, seq: int, message: ChatMessage) -> int | None:
        """Replace the pending tool message at ``seq``; the new version, or None when nothing was replaced."""
        return await appends.replace_pending(self._table, session_id, seq, message)

    async def replace_placeholder(
        self, session_id: str, seq: int, message: ChatMessage, *, waiting: tuple[str, str]
    ) -> int | None:
        """Replace the placeholder at ``seq`` while it waits for ``waiting``; the new version, or None."""
        return await appends.replace_placeholder(self._table, session_id, seq, message, waiting=waiting)

    @property
    def table(self) -> Table:
        return self._table

    async def update_fields(
        self, session_id: str, changes: dict[str, Any], *, owner: str | None = None
    ) -> ChatSession | None:
        """Set META fields (title, chat_type, status, metadata); None when missing, deleted or not ``owner``'s."""
        return await fields.update_fields(self._table, session_id, changes, owner=owner)

    async def propose_title(self, session_id: str, title: str) -> ChatSession | None:
        """Set a generated title unless the user named the session; None when missing or deleted."""
        return await fields.propose_title(self._table, session_id, title)

    async def assign_owner(self, session_id: str, user_id: str) -> ChatSession | None:
        """Give an anonymous session to ``user_id``; None if missing, deleted or owned by someone else."""
        return await fields.assign_owner(self._table, session_id, user_id)

    async def set_summary(self, session_id: str, summary: str, seq: int) -> ChatSession | None:
        """Store the context summary of the path from the root to message ``seq`` (replacing any other)."""
        return await fields.set_summary(self._table, session_id, summary, seq)

    async def set_leaf(self, session_id: str, leaf_seq: int, *, owner: str | None) -> ChatSession | None:
        """Switch the active branch to the one ending at ``leaf_seq``; None when refused (see ``fields``)."""
        return await fields.set_leaf(self._table, session_id, leaf_seq, owner=owner)

    async def delete(
        self,
        session_id: str,
        *,
        owner: str | None = None,
        before_sweep: Callable[[str], Awaitable[Any]] | None = None,
    ) -> bool:
        """Tombstone META and remove every other item; False when the session does not exist for ``owner``."""
        return await deletion.delete(self._table, session_id, owner=owner, before_sweep=before_sweep)

    # -- the turn lease -------------------------------------------------------------------------------------

    async def acquire_turn(
        self, session_id: str, turn_id: str, *, owner: str | None, lease_seconds: int
    ) -> ChatSession:
        """Take the turn lease; raises ``NotFound`` or ``TurnInProgress``. Returns META as updated."""
        return await leases.acquire(self._table, session_id, turn_id, owner=owner, lease_seconds=lease_seconds)

    async def release_turn(self, session_id: str, turn_id: str) -> ChatSession | None:
        """Give the lease back if this turn still holds it; None when it did not."""
        return await leases.release(self._table, session_id, turn_id)

    async def renew_turn(self, session_id: str, turn_id: str, *, lease_seconds: int) -> bool:
        """Extend the lease while this turn holds it; False when it does not."""
        return await leases.renew(self._table, session_id, turn_id, lease_seconds=lease_seconds)

    async def take_lapsed_turn(
        self, session_id: str, turn_id: str, closer_id: str, *, lease_seconds: int
    ) -> ChatSession | None:
        """Move a lapsed lease of ``turn_id`` to ``closer_id``; META as updated, or None."""
        return await leases.take_lapsed(self._table, session_id, turn_id, closer_id, lease_seconds=lease_seconds)

    # -- beside the sessions: feedback on answers, the user's context ---------------------------------------------

    async def put_feedback(self, session_id: str, rating: Feedback, *, owner: str) -> None:
        """Store or replace the feedback of one answer; ``NotFound`` unless the session is alive and ``owner``'s."""
        await feedback.put(self._table, session_id, rating, owner=owner)

    async def delete_feedback(self, session_id: str, turn_id: str) -> bool:
        """Remove the feedback of one answer; False when there was none."""
        return await feedback.delete(self._table, session_id, turn_id)

    async def feedback_of(self, session_id: str, turn_ids: list[str]) -> dict[str, Feedback]:
        """The feedback stored for these answers, by turn id."""
        return await feedback.of_turns(self._table, session_id, turn_ids)

    async def load_user_context(self, user_id: str) -> UserContext:
        """The user's context, or an empty one at version 0."""
        return await user_context.load(self._table, user_id)

    async def save_user_context(self, user_id: str, text: str, *, expected_version: int | None) -> UserContext:
        """Store the user's context as its next version (conditional on ``expected_version`` when given)."""
        return await user_context.save(self._table, user_id, text, expected_version=expected_version)
