"""Key shapes and attribute values of the single table, and the conditions several writers share."""

from __future__ import annotations

from typing import Any

Item = dict[str, Any]

META = "META"
MSG_PREFIX = "MSG#"
CMID_PREFIX = "CMID#"
OP_PREFIX = "OP#"
APPROVAL_PREFIX = "APPROVAL#"
FEEDBACK_PREFIX = "FEEDBACK#"  # sorts before META: outside the META..MSG#~ range a session read queries
USER_CONTEXT = "CONTEXT"
MSG_END = "MSG#~"  # sorts after every MSG#<digits>
BY_USER_INDEX = "ByUser"  # GSI1PK = USER#<uid>, GSI1SK = <updated_at>#<sid>: a user's sessions, newest first
# The same sort key, partitioned by the listing filters: a filtered page reads only the sessions it returns.
BY_USER_STATUS_INDEX = "ByUserStatus"  # GSI2PK = USER#<uid>#STATUS#<status>
BY_USER_TYPE_INDEX = "ByUserTypeStatus"  # GSI3PK = USER#<uid>#TYPE#<chat_type>#STATUS#<status>
LISTING_KEYS = ("GSI1PK", "GSI1SK", "GSI2PK", "GSI3PK")
TOMBSTONE_DAYS = 30

# The conditions written once: an item that must not exist yet, and a session that exists and is not deleted.
ABSENT = "attribute_not_exists(PK)"
SESSION_ALIVE = "attribute_exists(PK) AND attribute_not_exists(deleted_at)"


def s_attr(value: str) -> dict[str, str]:
    return {"S": value}


def n_attr(value: int) -> dict[str, str]:
    return {"N": str(value)}


def pk(session_id: str) -> str:
    return f"SESSION#{session_id}"


def msg_sk(seq: int) -> str:
    return f"{MSG_PREFIX}{seq:010d}"


def user_pk(user_id: str) -> str:
    return f"USER#{user_id}"


def by_user_sk(updated_at: str, session_id: str) -> str:
    return f"{updated_at}#{session_id}"


def by_status_pk(user_id: str, status: str) -> str:
    return f"{user_pk(user_id)}#STATUS#{status}"


def by_type_pk(user_id: str, chat_type: str, status: str) -> str:
    # Unambiguous: neither a chat type nor a status contains '#', so both are read back from the end.
    return f"{user_pk(user_id)}#TYPE#{chat_type}#STATUS#{status}"


def filter_keys(user_id: str, chat_type: str, status: str) -> Item:
    """The partition keys of the filtered indexes for a session of ``user_id`` with this type and status."""
    return {"GSI2PK": s_attr(by_status_pk(user_id, status)), "GSI3PK": s_attr(by_type_pk(user_id, chat_type, status))}


def key(partition: str, sort: str) -> Item:
    return {"PK": s_attr(partition), "SK": s_attr(sort)}


def meta_key(session_id: str) -> Item:
    return key(pk(session_id), META)


def msg_key(session_id: str, seq: int) -> Item:
    return key(pk(session_id), msg_sk(seq))


def cmid_key(session_id: str, client_message_id: str) -> Item:
    return key(pk(session_id), CMID_PREFIX + client_message_id)


def approval_key(session_id: str, approval_id: str) -> Item:
    return key(pk(session_id), APPROVAL_PREFIX + approval_id)


def feedback_key(session_id: str, turn_id: str) -> Item:
    return key(pk(session_id), FEEDBACK_PREFIX + turn_id)


def user_context_key(user_id: str) -> Item:
    return key(user_pk(user_id), USER_CONTEXT)


def operation_key(operation_id: str) -> Item:
    return key(OP_PREFIX + operation_id, META)


def operation_marker_key(session_id: str, operation_id: str) -> Item:
    return key(pk(session_id), OP_PREFIX + operation_id)


def callback_key(digest: str) -> Item:
    return key(f"CALLBACK#{digest}", "SIGNATURE")
