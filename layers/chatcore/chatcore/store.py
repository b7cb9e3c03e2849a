"""DynamoDB single-table store: the source of truth for sessions and messages.

Items of one session share ``PK = SESSION#<sid>``:

    SK = META                   owner, title, type, status, metadata, timestamps, message_count, version,
                                usage totals, GSI keys (ByUser), expires_at; a tombstone after delete
    SK = MSG#<seq:010d>         one message (its JSON in ``body``)
    SK = CMID#<client id>       the seq a client message id was stored at (idempotent resend)

Every write is conditional. Appending is one transaction: the new message items (``attribute_not_exists``) plus
the META update guarded by the expected ``version``; a lost race reloads META and retries with jittered backoff,
a deleted session fails with ``NotFound`` instead of being recreated. boto3 is blocking, so calls run in a thread.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from chatcore.aws import dynamodb_client
from chatcore.dynamo import (
    BY_USER_INDEX,
    CMID_PREFIX,
    META,
    MSG_END,
    TOMBSTONE_DAYS,
    Item,
    cancellation_reasons,
    decode_message,
    decode_meta,
    error_code,
    in_thread,
    iso,
    msg_sk,
    n_attr,
    pk,
    s_attr,
    translate,
    user_pk,
)
from chatcore.errors import (
    ConcurrentWriteError,
    Conflict,
    DuplicateClientMessage,
    NotFound,
    ServiceUnavailable,
    TurnInProgress,
    TurnLost,
)
from chatcore.models import ChatMessage, ChatSession, Usage, utcnow

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import TransactWriteItemTypeDef

# One transaction holds at most 100 items: META plus up to 2 items (message + client id) per message.
MESSAGES_PER_TRANSACTION = 49
MAX_WRITE_ATTEMPTS = 40


def _usage_of(messages: Sequence[ChatMessage]) -> Usage:
    return sum((m.usage for m in messages if m.usage), Usage())


@dataclass(frozen=True)
class TurnGuard:
    """Make a write conditional on ``turn_id`` holding the session's lease; ``release`` gives it back."""

    turn_id: str
    release: bool = False

    def keep(self) -> TurnGuard:
        return TurnGuard(self.turn_id, release=False)


class SessionStore:
    """Async facade over the DynamoDB table; raises only ``chatcore.errors`` types."""

    def __init__(
        self,
        table_name: str,
        *,
        client_factory: Callable[[], DynamoDBClient] = dynamodb_client,
        session_ttl_days: int = 0,
    ) -> None:
        self.table_name = table_name
        self._client_factory = client_factory
        self._session_ttl_days = session_ttl_days

    # -- plumbing -------------------------------------------------------------------------------------------

    @property
    def _db(self) -> DynamoDBClient:
        return self._client_factory()

    def _expires_at(self, now: datetime) -> dict[str, str] | None:
        if self._session_ttl_days <= 0:
            return None
        return n_attr(int((now + timedelta(days=self._session_ttl_days)).timestamp()))

    def _message_items(
        self, session_id: str, messages: Sequence[ChatMessage], first_seq: int, now: datetime
    ) -> list[TransactWriteItemTypeDef]:
        items: list[TransactWriteItemTypeDef] = []
        expires = self._expires_at(now)
        for offset, message in enumerate(messages):
            seq = first_seq + offset
            body = message.model_copy(update={"seq": seq}).model_dump_json()
            record: Item = {
                "PK": s_attr(pk(session_id)),
                "SK": s_attr(msg_sk(seq)),
                "seq": n_attr(seq),
                "body": s_attr(body),
            }
            if message.status == "pending" and message.operation_id:
                record["pending_op"] = s_attr(message.operation_id)
            if expires:
                record["expires_at"] = expires
            items.append(
                {
                    "Put": {
                        "TableName": self.table_name,
                        "Item": record,
                        "ConditionExpression": "attribute_not_exists(PK)",
                    }
                }
            )
            if message.client_message_id:
                marker: Item = {
                    "PK": s_attr(pk(session_id)),
                    "SK": s_attr(CMID_PREFIX + message.client_message_id),
                    "seq": n_attr(seq),
                }
                if expires:
                    marker["expires_at"] = expires
                items.append(
                    {
                        "Put": {
                            "TableName": self.table_name,
                            "Item": marker,
                            "ConditionExpression": "attribute_not_exists(PK)",
                        }
                    }
                )
        return items

    async def _transact(self, items: list[TransactWriteItemTypeDef]) -> None:
        await in_thread(self._db.transact_write_items, TransactItems=items)

    async def _duplicate_seq(self, session_id: str, client_message_id: str) -> int | None:
        found = await in_thread(
            self._db.get_item,
            TableName=self.table_name,
            Key={"PK": s_attr(pk(session_id)), "SK": s_attr(CMID_PREFIX + client_message_id)},
            ConsistentRead=True,
        )
        item = found.get("Item")
        return int(item["seq"]["N"]) if item else None

    async def _raise_duplicate(self, session_id: str, messages: Sequence[ChatMessage], reasons: list[str]) -> None:
        """If a client-message-id marker failed its condition, raise DuplicateClientMessage for it."""
        index = 1  # transaction item 0 is META; each message is followed by its client-id marker, if any
        for message in messages:
            if not message.client_message_id:
                index += 1
                continue
            marker = index + 1
            if marker < len(reasons) and reasons[marker] == "ConditionalCheckFailed":
                seq = await self._duplicate_seq(session_id, message.client_message_id)
                raise DuplicateClientMessage(
                    "a message with this client_message_id is already stored",
                    client_message_id=message.client_message_id,
                    seq=seq,
                )
            index += 2

    # -- reads ----------------------------------------------------------------------------------------------

    async def load_meta(self, session_id: str) -> ChatSession | None:
        """The session without its messages, or None when missing or deleted."""
        try:
            found = await in_thread(
                self._db.get_item,
                TableName=self.table_name,
                Key={"PK": s_attr(pk(session_id)), "SK": s_attr(META)},
                ConsistentRead=True,
            )
        except ClientError as exc:
            raise translate(exc) from exc
        item = found.get("Item")
        if not item or "deleted_at" in item:
            return None
        return decode_meta(item)

    async def load(self, session_id: str) -> ChatSession | None:
        """The whole session, paging through any number of messages; None when missing or deleted."""
        for _attempt in range(5):
            items = await self._query_session(session_id)
            if not items or items[0]["SK"]["S"] != META or "deleted_at" in items[0]:
                return None
            session = decode_meta(items[0])
            messages = [decode_message(item) for item in items[1:]][: session.message_count]
            # A query is not isolated from a concurrent transaction: META may count a message the query
            # did not see yet. Read again rather than return a history with a hole.
            if len(messages) == session.message_count:
                session.messages = messages
                session.mark_clean()
                return session
            await asyncio.sleep(0.01)
        raise ServiceUnavailable("session kept changing while it was read")

    async def _query_session(self, session_id: str) -> list[Item]:
        items: list[Item] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": "PK = :pk AND SK BETWEEN :first AND :last",
            "ExpressionAttributeValues": {
                ":pk": s_attr(pk(session_id)),
                ":first": s_attr(META),
                ":last": s_attr(MSG_END),
            },
            "ConsistentRead": True,
        }
        try:
            while True:
                page = await in_thread(self._db.query, **kwargs)
                items.extend(page.get("Items", []))
                last = page.get("LastEvaluatedKey")
                if not last:
                    return items
                kwargs["ExclusiveStartKey"] = last
        except ClientError as exc:
            raise translate(exc) from exc

    async def list_for_user(
        self,
        user_id: str,
        *,
        limit: int,
        start_after: tuple[str, str] | None = None,
        status: str | None = None,
        chat_type: str | None = None,
    ) -> tuple[list[ChatSession], tuple[str, str] | None]:
        """Sessions of ``user_id`` newest first; ``start_after`` and the returned cursor are
        ``(updated_at_iso, session_id)`` of the last session of a page."""
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "IndexName": BY_USER_INDEX,
            "KeyConditionExpression": "GSI1PK = :u",
            "ExpressionAttributeValues": {":u": s_attr(user_pk(user_id))},
            "ScanIndexForward": False,
            "Limit": limit,
        }
        filters = []
        names: dict[str, str] = {}
        if status:
            filters.append("#st = :st")
            names["#st"] = "status"
            kwargs["ExpressionAttributeValues"][":st"] = s_attr(status)
        if chat_type:
            filters.append("chat_type = :ct")
            kwargs["ExpressionAttributeValues"][":ct"] = s_attr(chat_type)
        if filters:
            kwargs["FilterExpression"] = " AND ".join(filters)
        if names:
            kwargs["ExpressionAttributeNames"] = names
        if start_after:
            updated, sid = start_after
            kwargs["ExclusiveStartKey"] = {
                "PK": s_attr(pk(sid)),
                "SK": s_attr(META),
                "GSI1PK": s_attr(user_pk(user_id)),
                "GSI1SK": s_attr(f"{updated}#{sid}"),
            }
        sessions: list[ChatSession] = []
        try:
            while len(sessions) < limit:
                page = await in_thread(self._db.query, **kwargs)
                for item in page.get("Items", []):
                    sessions.append(decode_meta(item))
                    if len(sessions) == limit:
                        break
                last = page.get("LastEvaluatedKey")
                if not last:
                    if len(sessions) < limit:
                        return sessions, None
                    break
                kwargs["ExclusiveStartKey"] = last
        except ClientError as exc:
            raise translate(exc) from exc
        tail = sessions[-1]
        return sessions, (iso(tail.updated_at), tail.session_id)

    # -- writes ---------------------------------------------------------------------------------------------

    async def save(self, session: ChatSession, *, turn: TurnGuard | None = None) -> ChatSession:
        """Create the session or append its unsaved messages (``seq is None``) and changed fields.

        Returns the stored state: seqs assigned, counters and version updated. When another writer got in
        first, the session is reloaded from the table so the result is never a partial picture. With ``turn``,
        the write only succeeds while that turn holds the session's lease (and may release it).
        """
        new_messages = [message for message in session.messages if message.seq is None]
        if session.version == 0:
            await self._create(session, new_messages[:MESSAGES_PER_TRANSACTION])
            new_messages = new_messages[MESSAGES_PER_TRANSACTION:]
            if not new_messages:
                return session
        raced = False
        while True:
            chunk = new_messages[:MESSAGES_PER_TRANSACTION]
            last = len(new_messages) <= MESSAGES_PER_TRANSACTION
            raced |= await self._append(session, chunk, turn if last else (turn and turn.keep()))
            new_messages = new_messages[MESSAGES_PER_TRANSACTION:]
            if not new_messages:
                break
        if raced:
            fresh = await self.load(session.session_id)
            if fresh is None:
                raise NotFound("session was deleted")
            return fresh
        return session

    async def _create(self, session: ChatSession, messages: list[ChatMessage]) -> None:
        now = utcnow()
        session.created_at = session.updated_at = now
        usage = _usage_of(messages)
        meta: Item = {
            "PK": s_attr(pk(session.session_id)),
            "SK": s_attr(META),
            "session_id": s_attr(session.session_id),
            "title": s_attr(session.title),
            "chat_type": s_attr(session.chat_type),
            "status": s_attr(session.status),
            "metadata": s_attr(json.dumps(session.metadata, separators=(",", ":"))),
            "created_at": s_attr(iso(now)),
            "updated_at": s_attr(iso(now)),
            "message_count": n_attr(len(messages)),
            "version": n_attr(1),
            "usage_prompt": n_attr(usage.prompt_tokens),
            "usage_completion": n_attr(usage.completion_tokens),
            "usage_total": n_attr(usage.total_tokens),
        }
        if session.user_id:
            meta["user_id"] = s_attr(session.user_id)
            meta["GSI1PK"] = s_attr(user_pk(session.user_id))
            meta["GSI1SK"] = s_attr(f"{iso(now)}#{session.session_id}")
        expires = self._expires_at(now)
        if expires:
            meta["expires_at"] = expires
        items: list[TransactWriteItemTypeDef] = [
            {
                "Put": {
                    "TableName": self.table_name,
                    "Item": meta,
                    "ConditionExpression": "attribute_not_exists(PK)",
                }
            }
        ]
        items += self._message_items(session.session_id, messages, 1, now)
        try:
            await self._transact(items)
        except ClientError as exc:
            reasons = cancellation_reasons(exc)
            if reasons and reasons[0] == "ConditionalCheckFailed":
                raise Conflict("a session with this id exists or was deleted") from exc
            if error_code(exc) == "TransactionCanceledException" and "ConditionalCheckFailed" in reasons:
                await self._raise_duplicate(session.session_id, messages, reasons)
            raise translate(exc) from exc
        for seq, message in enumerate(messages, start=1):
            message.seq = seq
        session.message_count = len(messages)
        session.version = 1
        session.usage = usage
        session.mark_clean()

    async def _append(self, session: ChatSession, messages: list[ChatMessage], turn: TurnGuard | None) -> bool:
        """Append ``messages`` and write changed fields; returns True when it had to retry after a race."""
        expected_version, first_seq = session.version, session.message_count + 1
        raced = False
        for attempt in range(MAX_WRITE_ATTEMPTS):
            now = utcnow()
            try:
                await self._transact(self._append_items(session, messages, expected_version, first_seq, now, turn))
            except ClientError as exc:
                await self._after_failed_append(session, messages, exc)
                fresh = await self.load_meta(session.session_id)
                if fresh is None:
                    raise NotFound("session was deleted") from exc
                if turn is not None and fresh.active_turn_id != turn.turn_id:
                    raise TurnLost("this turn no longer holds the session's lease") from exc
                expected_version, first_seq = fresh.version, fresh.message_count + 1
                raced = True
                await asyncio.sleep(random.uniform(0, min(0.2, 0.005 * 2**attempt)))  # noqa: S311 - jitter
                continue
            added = _usage_of(messages)
            for offset, message in enumerate(messages):
                message.seq = first_seq + offset
            session.message_count = first_seq + len(messages) - 1
            session.version = expected_version + 1
            session.updated_at = now
            session.usage = session.usage + added
            if turn is not None and turn.release:
                session.active_turn_id = None
            session.mark_clean()
            return raced
        raise ConcurrentWriteError("too many concurrent writers on this session; try again")

    async def _after_failed_append(self, session: ChatSession, messages: list[ChatMessage], exc: ClientError) -> None:
        """Raise for failures that a retry cannot fix; return for a lost race."""
        code = error_code(exc)
        if code != "TransactionCanceledException":
            raise translate(exc) from exc
        reasons = cancellation_reasons(exc)
        await self._raise_duplicate(session.session_id, messages, reasons)
        if any(reason not in ("None", "ConditionalCheckFailed", "TransactionConflict") for reason in reasons):
            raise translate(exc) from exc

    def _append_items(
        self,
        session: ChatSession,
        messages: list[ChatMessage],
        expected_version: int,
        first_seq: int,
        now: datetime,
        turn: TurnGuard | None = None,
    ) -> list[TransactWriteItemTypeDef]:
        usage = _usage_of(messages)
        values: Item = {
            ":v": n_attr(expected_version),
            ":one": n_attr(1),
            ":count": n_attr(first_seq - 1 + len(messages)),
            ":now": s_attr(iso(now)),
            ":up": n_attr(usage.prompt_tokens),
            ":uc": n_attr(usage.completion_tokens),
            ":ut": n_attr(usage.total_tokens),
        }
        names = {"#v": "version"}
        sets = ["#v = #v + :one", "message_count = :count", "updated_at = :now"]
        if session.user_id:
            values[":gsk"] = s_attr(f"{iso(now)}#{session.session_id}")
            sets.append("GSI1SK = :gsk")
        for field, value in session.changed_fields().items():
            token = f":f_{field}"
            names[f"#f_{field}"] = field
            sets.append(f"#f_{field} = {token}")
            values[token] = s_attr(json.dumps(value, separators=(",", ":")) if field == "metadata" else str(value))
        expires = self._expires_at(now)
        if expires:
            values[":exp"] = expires
            sets.append("expires_at = :exp")
        update = "SET " + ", ".join(sets) + " ADD usage_prompt :up, usage_completion :uc, usage_total :ut"
        condition = "attribute_exists(PK) AND attribute_not_exists(deleted_at) AND #v = :v"
        if turn is not None:
            condition += " AND active_turn_id = :turn"
            values[":turn"] = s_attr(turn.turn_id)
            if turn.release:
                update += " REMOVE active_turn_id, active_turn_expires"
        meta_update: TransactWriteItemTypeDef = {
            "Update": {
                "TableName": self.table_name,
                "Key": {"PK": s_attr(pk(session.session_id)), "SK": s_attr(META)},
                "UpdateExpression": update,
                "ConditionExpression": condition,
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
            }
        }
        return [meta_update, *self._message_items(session.session_id, messages, first_seq, now)]

    async def acquire_turn(
        self, session_id: str, turn_id: str, *, owner: str | None, lease_seconds: int
    ) -> ChatSession:
        """Take the session's turn lease (one conditional write). Raises ``NotFound`` (missing, deleted, another
        user's) or ``TurnInProgress`` (an unexpired lease is held). Returns META as updated."""
        now = int(utcnow().timestamp())
        values: Item = {
            ":one": n_attr(1),
            ":turn": s_attr(turn_id),
            ":exp": n_attr(now + lease_seconds),
            ":now": n_attr(now),
        }
        condition = "attribute_exists(PK) AND attribute_not_exists(deleted_at)"
        if owner is not None:
            condition += " AND user_id = :owner"
            values[":owner"] = s_attr(owner)
        free = "(attribute_not_exists(active_turn_id) OR active_turn_expires < :now)"
        try:
            result = await in_thread(
                self._db.update_item,
                TableName=self.table_name,
                Key={"PK": s_attr(pk(session_id)), "SK": s_attr(META)},
                UpdateExpression="SET #v = #v + :one, active_turn_id = :turn, active_turn_expires = :exp",
                ConditionExpression=f"{condition} AND {free}",
                ExpressionAttributeNames={"#v": "version"},
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise translate(exc) from exc
            await self._lease_refused(session_id, owner, exc.response.get("Item"))  # type: ignore[arg-type]
            raise
        return decode_meta(result["Attributes"])

    async def _lease_refused(self, session_id: str, owner: str | None, old: Item | None) -> None:
        """Raise NotFound or TurnInProgress for a refused lease (``old`` is META as the condition saw it)."""
        if old is not None:
            owner_now = old.get("user_id", {}).get("S")
            missing = "deleted_at" in old
        else:  # no item, or an endpoint that does not return it on failure
            meta = await self.load_meta(session_id)
            missing = meta is None
            owner_now = None if meta is None else meta.user_id
        if missing or (owner is not None and owner_now != owner):
            raise NotFound("session not found")
        raise TurnInProgress("another reply is still being generated in this session")

    async def release_turn(self, session_id: str, turn_id: str) -> ChatSession | None:
        """Give the lease back if this turn still holds it; None when it did not."""
        return await self._update_meta(
            session_id,
            "SET #v = #v + :one REMOVE active_turn_id, active_turn_expires",
            "active_turn_id = :turn",
            {"#v": "version"},
            {":one": n_attr(1), ":turn": s_attr(turn_id)},
        )

    async def set_summary(self, session_id: str, summary: str, seq: int) -> None:
        """Store the context summary covering messages 1..seq, unless a summary covering more exists."""
        await self._update_meta(
            session_id,
            "SET summary = :s, summary_seq = :q, #v = #v + :one",
            "attribute_exists(PK) AND attribute_not_exists(deleted_at)"
            " AND (attribute_not_exists(summary_seq) OR summary_seq < :q)",
            {"#v": "version"},
            {":s": s_attr(summary), ":q": n_attr(seq), ":one": n_attr(1)},
        )

    async def replace_pending(self, session_id: str, seq: int, message: ChatMessage) -> int | None:
        """Replace the pending tool message at ``seq`` with its result, only while it is still pending for the
        same operation and the session exists. Returns the new session version, or None when nothing was
        replaced (already saved, or the session was deleted)."""
        assert message.operation_id is not None
        body = message.model_copy(update={"seq": seq}).model_dump_json()
        items: list[TransactWriteItemTypeDef] = [
            {
                "Update": {
                    "TableName": self.table_name,
                    "Key": {"PK": s_attr(pk(session_id)), "SK": s_attr(msg_sk(seq))},
                    "UpdateExpression": "SET body = :body REMOVE pending_op",
                    "ConditionExpression": "pending_op = :op",
                    "ExpressionAttributeValues": {":body": s_attr(body), ":op": s_attr(message.operation_id)},
                }
            },
            {
                "Update": {
                    "TableName": self.table_name,
                    "Key": {"PK": s_attr(pk(session_id)), "SK": s_attr(META)},
                    "UpdateExpression": "SET #v = #v + :one",
                    "ConditionExpression": "attribute_exists(PK) AND attribute_not_exists(deleted_at)",
                    "ExpressionAttributeNames": {"#v": "version"},
                    "ExpressionAttributeValues": {":one": n_attr(1)},
                }
            },
        ]
        try:
            await self._transact(items)
        except ClientError as exc:
            if error_code(exc) == "TransactionCanceledException" and "ConditionalCheckFailed" in cancellation_reasons(
                exc
            ):
                return None
            raise translate(exc) from exc
        meta = await self.load_meta(session_id)
        return meta.version if meta else None

    async def update_fields(
        self, session_id: str, changes: dict[str, Any], *, owner: str | None = None
    ) -> ChatSession | None:
        """Set META fields (title, chat_type, status, metadata); None when missing, deleted or not ``owner``'s."""
        names = {"#v": "version"}
        values: Item = {":one": n_attr(1)}
        sets = ["#v = #v + :one"]
        for field, value in changes.items():
            names[f"#{field}"] = field
            values[f":{field}"] = s_attr(json.dumps(value, separators=(",", ":")) if field == "metadata" else value)
            sets.append(f"#{field} = :{field}")
        condition = "attribute_exists(PK) AND attribute_not_exists(deleted_at)"
        if owner is not None:
            condition += " AND user_id = :owner"
            values[":owner"] = s_attr(owner)
        return await self._update_meta(session_id, "SET " + ", ".join(sets), condition, names, values)

    async def assign_owner(self, session_id: str, user_id: str) -> ChatSession | None:
        """Give an anonymous session to ``user_id``; None if missing, deleted or owned by someone else."""
        now = iso(utcnow())
        values: Item = {
            ":one": n_attr(1),
            ":owner": s_attr(user_id),
            ":gpk": s_attr(user_pk(user_id)),
            ":gsk": s_attr(f"{now}#{session_id}"),
        }
        return await self._update_meta(
            session_id,
            "SET #v = #v + :one, user_id = :owner, GSI1PK = :gpk, GSI1SK = :gsk",
            "attribute_exists(PK) AND attribute_not_exists(deleted_at)"
            " AND (attribute_not_exists(user_id) OR user_id = :owner)",
            {"#v": "version"},
            values,
        )

    async def _update_meta(
        self, session_id: str, update: str, condition: str, names: dict[str, str], values: Item
    ) -> ChatSession | None:
        try:
            result = await in_thread(
                self._db.update_item,
                TableName=self.table_name,
                Key={"PK": s_attr(pk(session_id)), "SK": s_attr(META)},
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return None
            raise translate(exc) from exc
        return decode_meta(result["Attributes"])

    async def delete(
        self,
        session_id: str,
        *,
        owner: str | None = None,
        before_sweep: Callable[[str], Awaitable[Any]] | None = None,
    ) -> bool:
        """Tombstone META, then remove every other item of the session.

        Returns False when the session does not exist for ``owner`` (a repeated delete also sweeps again, so a
        delete cut short by a crash is finished by the retry). The tombstone makes later writes fail instead of
        recreating the session; it expires after TOMBSTONE_DAYS.
        """
        now = utcnow()
        values: Item = {
            ":now": s_attr(iso(now)),
            ":exp": n_attr(int((now + timedelta(days=TOMBSTONE_DAYS)).timestamp())),
        }
        condition = "attribute_exists(PK)"
        if owner is not None:
            condition += " AND user_id = :owner"
            values[":owner"] = s_attr(owner)
        try:
            result = await in_thread(
                self._db.update_item,
                TableName=self.table_name,
                Key={"PK": s_attr(pk(session_id)), "SK": s_attr(META)},
                UpdateExpression="SET deleted_at = if_not_exists(deleted_at, :now), expires_at = :exp "
                "REMOVE GSI1PK, GSI1SK, title, metadata",
                ConditionExpression=condition,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_OLD",
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise translate(exc) from exc
        if before_sweep is not None:  # e.g. stop running operations (their markers are swept next)
            await before_sweep(session_id)
        await self._sweep(session_id)
        return "deleted_at" not in result.get("Attributes", {})

    async def _sweep(self, session_id: str) -> None:
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": "PK = :pk",
            "ExpressionAttributeValues": {":pk": s_attr(pk(session_id))},
            "ProjectionExpression": "PK, SK",
            "ConsistentRead": True,
        }
        try:
            while True:
                page = await in_thread(self._db.query, **kwargs)
                keys = [item for item in page.get("Items", []) if item["SK"]["S"] != META]
                for start in range(0, len(keys), 25):
                    await self._batch_delete(keys[start : start + 25])
                last = page.get("LastEvaluatedKey")
                if not last:
                    return
                kwargs["ExclusiveStartKey"] = last
        except ClientError as exc:
            raise translate(exc) from exc

    async def _batch_delete(self, keys: list[Item]) -> None:
        requests: list[Any] = [{"DeleteRequest": {"Key": key}} for key in keys]
        for attempt in range(8):
            result = await in_thread(self._db.batch_write_item, RequestItems={self.table_name: requests})
            requests = list(result.get("UnprocessedItems", {}).get(self.table_name, []))
            if not requests:
                return
            await asyncio.sleep(0.05 * 2**attempt)
        raise ServiceUnavailable("DynamoDB kept throttling the delete; it will finish on retry")
