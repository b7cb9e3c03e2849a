"""The DynamoDB item layout of the single table, and the small helpers every table adapter shares.

PK = SESSION#<sid>   SK = META                 the session (a tombstone after delete)
PK = SESSION#<sid>   SK = MSG#<seq:010d>       one message (its JSON in ``body``)
PK = SESSION#<sid>   SK = CMID#<client id>     the seq a client message id was stored at
PK = SESSION#<sid>   SK = OP#<operation id>    a marker of the session's operation
PK = OP#<operation id>   SK = META            the operation (chatcore.operations)
GSI ByUser: GSI1PK = USER#<uid>, GSI1SK = <updated_at>#<sid>
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from chatcore.errors import ChatError, ServiceUnavailable
from chatcore.models import ChatMessage, ChatSession, Usage, utcnow

Item = dict[str, Any]

META = "META"
MSG_PREFIX = "MSG#"
CMID_PREFIX = "CMID#"
MSG_END = "MSG#~"  # sorts after every MSG#<digits>
BY_USER_INDEX = "ByUser"
TOMBSTONE_DAYS = 30


def pk(session_id: str) -> str:
    return f"SESSION#{session_id}"


def msg_sk(seq: int) -> str:
    return f"{MSG_PREFIX}{seq:010d}"


def user_pk(user_id: str) -> str:
    return f"USER#{user_id}"


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def s_attr(value: str) -> dict[str, str]:
    return {"S": value}


def n_attr(value: int) -> dict[str, str]:
    return {"N": str(value)}


def translate(exc: Exception) -> ChatError:
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        return ServiceUnavailable(f"DynamoDB request failed ({code})")
    return ServiceUnavailable("DynamoDB is unreachable")


def cancellation_reasons(exc: ClientError) -> list[str]:
    return [reason.get("Code", "None") for reason in exc.response.get("CancellationReasons", [])]


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def decode_meta(item: Item) -> ChatSession:
    owner = item.get("user_id", {}).get("S")
    return ChatSession(
        session_id=item["session_id"]["S"],
        user_id=owner,
        title=item.get("title", {}).get("S", ""),
        chat_type=item.get("chat_type", {}).get("S", "chat"),
        status=item.get("status", {}).get("S", "active"),
        metadata=json.loads(item.get("metadata", {}).get("S", "{}")),
        created_at=datetime.fromisoformat(item["created_at"]["S"]),
        updated_at=datetime.fromisoformat(item["updated_at"]["S"]),
        usage=Usage(
            prompt_tokens=int(item.get("usage_prompt", {}).get("N", "0")),
            completion_tokens=int(item.get("usage_completion", {}).get("N", "0")),
            total_tokens=int(item.get("usage_total", {}).get("N", "0")),
        ),
        message_count=int(item["message_count"]["N"]),
        version=int(item["version"]["N"]),
        active_turn_id=_active_turn(item),
        context_summary=item.get("summary", {}).get("S", ""),
        summary_seq=int(item.get("summary_seq", {}).get("N", "0")),
    )


def _active_turn(item: Item) -> str | None:
    turn = item.get("active_turn_id", {}).get("S")
    expires = int(item.get("active_turn_expires", {}).get("N", "0"))
    return turn if turn and expires > int(utcnow().timestamp()) else None


def decode_message(item: Item) -> ChatMessage:
    return ChatMessage.model_validate_json(item["body"]["S"])


async def in_thread(fn: Callable[..., Any], /, **kwargs: Any) -> Any:
    """Run a blocking boto3 call in a thread. ``ClientError`` passes through for the caller to read its code;
    connection-level failures become ``ServiceUnavailable``."""
    try:
        return await asyncio.to_thread(fn, **kwargs)
    except BotoCoreError as exc:
        raise ServiceUnavailable("AWS is unreachable") from exc
