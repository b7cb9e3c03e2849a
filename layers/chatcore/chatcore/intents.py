"""How a chat request is read: what the client asked for (an ``Intent``), and what the turn does about it (a
``Plan``), decided over the session as stored — never over the client's copy of the history.

The AI SDK's ``useChat`` sends the whole conversation with every POST (``{id, messages, trigger, messageId}``).
The web layer reduces that body to an intent; ``plan_turn`` decides over the stored active path:

=====================  ==============================================  ===========================================
trigger                last message sent                               plan
=====================  ==============================================  ===========================================
submit-message         user; id not on the active path                 ``Send``: a new message after the leaf
submit-message         user; id on the path, same text                 ``Resend``: replay that message's turn
submit-message         user; id on the path, other text                ``Edit``: a new version, sibling of the old
submit-message         assistant, tool parts ``approval-responded``    approval answers (``chatcore.approvals``)
submit-message         assistant, nothing to answer                    rejected (422)
regenerate-message     ``messageId`` names an answer (its turn id)     ``Regenerate``: a new answer, sibling of it
regenerate-message     ``messageId`` names a user message              ``Regenerate``: a new answer to it
regenerate-message     no ``messageId``                                ``Regenerate`` the last answer of the path
=====================  ==============================================  ===========================================

A turn plans over its working set (``ChatSession.working_set``: the recent part of the path). When the decision
needs an older message — a resent or edited message, or a regenerated answer, older than it; a new message while
approvals wait, whose id may be an older message's — ``plan_turn`` raises ``NeedsWholePath`` and the engine plans
again over the whole active path.

A user message's id is the client's (``client_message_id``); an edited version keeps it, so "the same id" means
the version on the active path. A new message while a tool call of the path waits for approval denies that call
first (``ChatEngine.submit``), so every call in the history has an output. Regenerate and edit never delete: the
old answer or message stays as a version (``GET /sessions/{id}/messages/{message_id}/versions``). Neither is
allowed while a background tool of the path is still running (its result belongs to the branch that called it): 409.
"""

from __future__ import annotations

from dataclasses import dataclass

from chatcore.approvals import ApprovalAnswer, waiting_on_path
from chatcore.errors import Conflict, NeedsWholePath, NotFound, ValidationFailed
from chatcore.models import ChatMessage, ChatSession, client_key


# -- what the client asked -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NewMessage:
    """A user message (``submit-message`` ending with the user's message)."""

    text: str
    client_message_id: str | None = None


@dataclass(frozen=True)
class RegenerateAnswer:
    """``regenerate-message``; ``message_id`` is the answer's id (its turn id), a user message's id, or None for
    the last answer."""

    message_id: str | None = None


@dataclass(frozen=True)
class ApprovalAnswers:
    """``submit-message`` whose last message is the assistant's, with tool parts in ``approval-responded``
    (``chatcore.approvals``; the engine's ``answer_approvals``)."""

    answers: list[ApprovalAnswer]


Intent = NewMessage | RegenerateAnswer | ApprovalAnswers


# -- what the turn does ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Send:
    text: str
    client_message_id: str | None


@dataclass(frozen=True)
class Resend:
    """The same message again: attach to the turn it started (``client_key`` names it in the replay log)."""

    client_key: str


@dataclass(frozen=True)
class Edit:
    """A new version of the user message ``of_seq``: same client id, new text, same parent."""

    text: str
    client_message_id: str
    of_seq: int
    parent_seq: int


@dataclass(frozen=True)
class Regenerate:
    """Answer again after message ``parent_seq`` (the new answer is a sibling of the answers already there)."""

    parent_seq: int


Plan = Send | Resend | Edit | Regenerate


def plan_turn(session: ChatSession, intent: Intent) -> Plan:
    """The row of the decision table (module docstring) for ``intent`` over ``session``'s active path."""
    if isinstance(intent, RegenerateAnswer):
        return _regenerate(session, intent.message_id)
    if isinstance(intent, ApprovalAnswers):
        raise TypeError("approval answers are not a turn plan: ChatEngine.answer_approvals takes them")
    cmid = intent.client_message_id
    stored = _user_message(session, cmid) if cmid else None
    if stored is None:
        if cmid and session.misses_older() and waiting_on_path(session):
            raise NeedsWholePath  # denying the waiting calls must wait until the message is known to be new
        return Send(intent.text, cmid)
    assert cmid is not None
    assert stored.seq is not None
    if (stored.content or "") == intent.text:
        return Resend(client_key(stored))
    _refuse_while_pending(session)
    return Edit(intent.text, cmid, stored.seq, _held(session, stored.parent_seq or 0))


def _user_message(session: ChatSession, client_message_id: str) -> ChatMessage | None:
    for message in reversed(session.messages):
        if message.role == "user" and message.client_message_id == client_message_id:
            return message
    return None


def _regenerate(session: ChatSession, message_id: str | None) -> Plan:
    path = session.messages
    if not path and session.misses_older():
        raise NeedsWholePath
    if not path:
        raise ValidationFailed(
            "there is no answer to regenerate", details=[{"loc": ["messageId"], "msg": "empty conversation"}]
        )
    if message_id is None:
        target = path[-1]
    else:
        found = next((m for m in path if message_id in (m.turn_id, m.message_id, m.client_message_id)), None)
        if found is None and session.misses_older():
            raise NeedsWholePath
        if found is None:
            raise NotFound("no message with this id on the conversation's active branch")
        target = found
    _refuse_while_pending(session)
    if target.role == "user":
        assert target.seq is not None
        return Regenerate(target.seq)
    # The answer is every message of its turn after the user's: answer again from before its first one.
    first = next(m for m in path if m.turn_id == target.turn_id and m.role != "user") if target.turn_id else target
    if first is path[0] and session.misses_older():
        raise NeedsWholePath  # the turn may have begun before the working set
    return Regenerate(_held(session, first.parent_seq or 0))


def _held(session: ChatSession, parent_seq: int) -> int:
    """``parent_seq``, when the turn can rebuild the path up to it from ``session`` (the root, or a message held)."""
    if parent_seq and all(message.seq != parent_seq for message in session.messages):
        raise NeedsWholePath
    return parent_seq


def _refuse_while_pending(session: ChatSession) -> None:
    if any(message.status == "pending" for message in session.messages):
        raise Conflict("a background tool of this conversation is still running; wait for its result")
