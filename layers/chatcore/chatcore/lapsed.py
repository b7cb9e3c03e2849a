"""Closing a turn that died mid-stream: what it left in its replay log, and the chunks that close that log.

A turn whose function crashed stops renewing its lease; when a stop, a resume or a resend of that turn finds the
lease lapsed, the engine takes it over (``TurnLeases.take_lapsed``) and closes the turn: the text of the model step
that was being streamed (not stored: a step is stored before its ``finish-step``) is persisted as ``interrupted``,
and the log gets the chunks a finished stream would have had (open texts and tool calls ended, ``finish``) and its
end entry, so followers stop instead of waiting for a turn nothing runs any more.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from chatcore.models import ChatMessage, new_id
from chatcore.observability import logger
from chatcore.store import TurnGuard
from chatcore.stream import (
    StreamError,
    StreamEvent,
    StreamFinish,
    StreamFinishStep,
    StreamTextEnd,
    StreamToolOutputError,
    encode_json,
)

if TYPE_CHECKING:
    from chatcore.turn_types import ChatDeps

INTERRUPTED_TEXT = "The assistant was interrupted before it finished this reply."
STOPPED_TOOL_TEXT = "the reply was stopped before this tool finished"


@dataclass
class DeadTurn:
    """A dead turn's log as read: whose message it wrote, its unsaved text, what was left open."""

    answer_id: str | None = None  # the assistant message it wrote (``start.messageId``)
    unsaved_text: str = ""  # the text of the step being streamed when it died
    open_step: bool = False
    open_texts: list[str] = field(default_factory=list)
    open_calls: list[str] = field(default_factory=list)
    ended: bool = False  # the log already has its finish

    def read(self, chunk_json: str) -> None:
        chunk = json.loads(chunk_json)
        kind = chunk.get("type")
        if kind == "start":
            self.answer_id = chunk.get("messageId") or self.answer_id
        elif kind == "start-step":
            self.open_step, self.unsaved_text = True, ""
        elif kind == "finish-step":
            self.open_step, self.unsaved_text, self.open_calls = False, "", []
        elif kind == "text-start":
            self.open_texts.append(str(chunk.get("id")))
        elif kind == "text-delta":
            self.unsaved_text += str(chunk.get("delta", ""))
        elif kind == "text-end" and chunk.get("id") in self.open_texts:
            self.open_texts.remove(chunk["id"])
        elif kind in ("tool-input-start", "tool-input-available") and chunk.get("toolCallId") not in self.open_calls:
            self.open_calls.append(str(chunk.get("toolCallId")))
        elif kind in ("tool-output-available", "tool-output-error", "tool-output-denied", "tool-approval-request"):
            if chunk.get("toolCallId") in self.open_calls:
                self.open_calls.remove(chunk["toolCallId"])
        elif kind == "finish":
            self.ended = True

    def closing(self, *, stopped: bool) -> list[StreamEvent]:
        """The chunks that end this turn's stream: a stop ends it like a stopped turn, a crash with an error."""
        if self.ended:
            return []
        events: list[StreamEvent] = [StreamTextEnd(id=text_id) for text_id in self.open_texts]
        events += [StreamToolOutputError(tool_call_id=call, error_text=STOPPED_TOOL_TEXT) for call in self.open_calls]
        if self.open_step:
            events.append(StreamFinishStep())
        if not stopped:
            events.append(StreamError(error_text=INTERRUPTED_TEXT))
        events.append(StreamFinish(finish_reason="stop" if stopped else "error"))
        return events


async def close_lapsed(deps: ChatDeps, session_id: str, turn_id: str, *, stopped: bool) -> bool:
    """Close ``turn_id`` if its lease lapsed (its process died mid-turn; nothing renews it): the text of the step it
    was streaming is stored as ``interrupted``, its replay log gets the closing chunks and its end entry. False when
    the turn still holds a live lease, ended, or another caller closed it."""
    closer_id = new_id("turn_")
    lease_seconds = deps.settings.turn_lease_seconds
    session = await deps.leases.take_lapsed(session_id, turn_id, closer_id, lease_seconds=lease_seconds)
    if session is None:
        return False
    dead = await read_log(deps, turn_id)
    answer_id = dead.answer_id or turn_id
    leaf = session.messages[-1] if session.messages else None
    # Only where the dead turn left off: its own user message or tool round is the leaf (a regenerate that stored
    # nothing yet has no place the partial answer could be put without guessing the branch).
    if dead.unsaved_text and leaf is not None and leaf.turn_id in (turn_id, answer_id):
        session.messages.append(
            ChatMessage(role="assistant", content=dead.unsaved_text, status="interrupted", turn_id=answer_id)
        )
    try:
        await deps.sessions.upsert_chat_session(session, turn=TurnGuard(closer_id, release=True))
    finally:
        await deps.leases.release(session_id, closer_id)
    chunks = [encode_json(event.chunk()) for event in dead.closing(stopped=stopped)]
    await deps.replay.close_unless_ended(session_id, turn_id, chunks)
    logger.warning("closed a turn whose lease lapsed", turn_id=turn_id, stopped=stopped)
    return True


async def close_abandoned(deps: ChatDeps, session_id: str, turn_id: str) -> bool:
    """End the log of a turn that died and whose lapsed lease another turn took (nothing closed it then): what it
    streamed cannot be stored any more, but its followers get their end. The caller knows the log has been idle
    longer than a lease and a title's wait, so a turn that finished but has not written its end yet is not cut short.
    False when the turn holds the lease or its log has ended."""
    if await deps.sessions.active_turn_id(session_id) == turn_id:
        return False
    dead = await read_log(deps, turn_id)
    chunks = [encode_json(event.chunk()) for event in dead.closing(stopped=False)]
    closed = await deps.replay.close_unless_ended(session_id, turn_id, chunks)
    if closed:
        logger.warning("closed the log of an abandoned turn", turn_id=turn_id)
    return closed


async def read_log(deps: ChatDeps, turn_id: str) -> DeadTurn:
    """The turn's replay log as read so far."""
    dead, cursor = DeadTurn(), "0-0"
    while entries := await deps.replay.read(turn_id, cursor, block_ms=1):
        for entry in entries:
            cursor = entry.entry_id
            if entry.chunk is not None:
                dead.read(entry.chunk)
    return dead
