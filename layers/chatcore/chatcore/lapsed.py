"""What a turn that died mid-stream left in its replay log, and the chunks that close that log.

A turn whose function crashed stops renewing its lease; when a stop, a resume or a resend of that turn finds the
lease lapsed, the engine takes it over (``TurnLeases.take_lapsed``) and closes the turn: the text of the model step
that was being streamed (not stored: a step is stored before its ``finish-step``) is persisted as ``interrupted``,
and the log gets the chunks a finished stream would have had (open texts and tool calls ended, ``finish``) and its
end entry, so followers stop instead of waiting for a turn nothing runs any more.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from chatcore.stream import (
    StreamError,
    StreamEvent,
    StreamFinish,
    StreamFinishStep,
    StreamTextEnd,
    StreamToolOutputError,
)

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
