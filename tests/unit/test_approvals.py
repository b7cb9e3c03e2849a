"""Tool approval against the engine with in-memory fakes: asking, approving, denying, and every way an answer
is refused — the tool runs only on an approval the server stored, with the arguments the server stored."""

from __future__ import annotations

import json
import time

import pytest

from chatcore.approvals import SUPERSEDED, ApprovalAnswer
from chatcore.errors import ConfigError, Conflict, NotFound, ValidationFailed
from chatcore.stream import StreamEvent
from chatcore.turn_types import ExistingTurn, TurnHandle
from tests.unit.conftest import SENT_MAIL, Parts
from tests.unit.conftest import stored as _stored
from tests.unit.fakes import text, tool_call

pytestmark = pytest.mark.anyio


async def _events(handle: TurnHandle | ExistingTurn) -> list[dict]:
    assert isinstance(handle, TurnHandle) and handle.task is not None
    queue = handle.channel.listen()
    events: list[StreamEvent] = []
    while (item := await queue.get()) is not None:
        events.append(item.event)
    await handle.task
    return [e.chunk() for e in events]


async def _ask(parts: Parts, to: str = "bob@example.com") -> tuple[list[dict], str, str]:
    """A turn whose model calls send_mail: returns its chunks, the approval id and the asking turn id."""
    parts.model.scripts = [tool_call("call_1", "send_mail", json.dumps({"to": to}))]
    chunks = await _events(await parts.engine.start_turn(parts.session_id, "Mail Bob", user_id="alice"))
    request = next(c for c in chunks if c["type"] == "tool-approval-request")
    return chunks, request["approvalId"], chunks[0]["messageId"]


async def _answer(parts: Parts, approval_id: str, approved: bool, **extra: object) -> list[dict]:
    answer = ApprovalAnswer(approval_id, approved, **extra)
    return await _events(await parts.engine.answer_approvals(parts.session_id, [answer], user_id="alice"))


async def test_a_call_that_needs_approval_asks_and_ends_the_turn(parts: Parts):
    chunks, approval_id, turn = await _ask(parts)
    types = [c["type"] for c in chunks]
    assert types.index("tool-input-available") < types.index("tool-approval-request") < types.index("finish")
    assert "tool-output-available" not in types and SENT_MAIL == []
    messages = _stored(parts).messages
    assert [(m.role, m.status) for m in messages] == [
        ("user", "complete"),
        ("assistant", "complete"),
        ("tool", "awaiting_approval"),
    ]
    assert messages[2].approval_id == approval_id and messages[2].turn_id == turn
    record = parts.approvals.records[(parts.session_id, approval_id)]
    assert record.state == "pending" and record.answer_id == turn and record.tool_call_id == "call_1"
    assert _stored(parts).active_turn_id is None
    assert len(parts.model.requests) == 1  # no model call while a call waits


async def test_approving_runs_the_stored_call_and_continues_the_same_message(parts: Parts):
    _, approval_id, turn = await _ask(parts, "bob@example.com")
    parts.model.scripts = [text("Mail sent.")]
    chunks = await _answer(parts, approval_id, True, tool_call_id="call_1")
    assert chunks[0] == {"type": "start", "messageId": turn}
    output = next(c for c in chunks if c["type"] == "tool-output-available")
    assert output["toolCallId"] == "call_1" and output["output"] == {"sent": True, "to": "bob@example.com"}
    assert chunks[-1]["type"] == "finish" and SENT_MAIL == ["bob@example.com"]
    messages = _stored(parts).messages
    assert [(m.role, m.status, m.seq) for m in messages] == [
        ("user", "complete", 1),
        ("assistant", "complete", 2),
        ("tool", "complete", 3),  # the placeholder replaced in place
        ("assistant", "complete", 4),
    ]
    assert messages[3].content == "Mail sent." and messages[3].turn_id == turn
    history = parts.model.requests[-1]["messages"]
    assert history[-1]["role"] == "tool" and json.loads(history[-1]["content"])["sent"] is True
    assert parts.approvals.records[(parts.session_id, approval_id)].state == "approved"


async def test_denying_gives_the_model_an_execution_denied_result(parts: Parts):
    _, approval_id, _ = await _ask(parts)
    parts.model.scripts = [text("OK, I will not send it.")]
    chunks = await _answer(parts, approval_id, False, reason="not now")
    denied = next(c for c in chunks if c["type"] == "tool-output-denied")
    assert denied["toolCallId"] == "call_1" and SENT_MAIL == []
    tool = _stored(parts).messages[2]
    assert tool.status == "denied" and json.loads(tool.content or "") == {
        "type": "execution-denied",
        "reason": "not now",
    }
    assert parts.model.requests[-1]["messages"][-1]["tool_call_id"] == "call_1"


async def test_an_answer_is_taken_once(parts: Parts):
    _, approval_id, _ = await _ask(parts)
    parts.model.scripts = [text("Sent.")]
    first = await parts.engine.answer_approvals(parts.session_id, [ApprovalAnswer(approval_id, True)], user_id="alice")
    await _events(first)
    # The same answer again (a retried POST) replays the run it started; the other answer is refused.
    again = await parts.engine.answer_approvals(parts.session_id, [ApprovalAnswer(approval_id, True)], user_id="alice")
    assert isinstance(again, ExistingTurn) and isinstance(first, TurnHandle) and again.turn_id == first.turn_id
    with pytest.raises(Conflict):
        await parts.engine.answer_approvals(parts.session_id, [ApprovalAnswer(approval_id, False)], user_id="alice")
    assert SENT_MAIL == ["bob@example.com"]


async def test_forged_and_late_answers_change_nothing(parts: Parts):
    _, approval_id, _ = await _ask(parts)
    answers = {
        "unknown id": (ApprovalAnswer("appr_forged", True), "alice", NotFound),
        "another user": (ApprovalAnswer(approval_id, True), "mallory", NotFound),
        "other call": (ApprovalAnswer(approval_id, True, tool_call_id="call_9"), "alice", ValidationFailed),
    }
    for answer, user, error in answers.values():
        with pytest.raises(error):
            await parts.engine.answer_approvals(parts.session_id, [answer], user_id=user)
    record = parts.approvals.records[(parts.session_id, approval_id)]
    parts.approvals.records[(parts.session_id, approval_id)] = type(record)(
        **{**record.__dict__, "deadline": int(time.time()) - 1}
    )
    with pytest.raises(Conflict):
        await parts.engine.answer_approvals(parts.session_id, [ApprovalAnswer(approval_id, True)], user_id="alice")
    assert SENT_MAIL == [] and parts.approvals.records[(parts.session_id, approval_id)].state == "pending"
    assert _stored(parts).messages[-1].status == "awaiting_approval" and _stored(parts).active_turn_id is None


async def test_the_arguments_that_run_are_the_stored_ones(parts: Parts):
    _, approval_id, _ = await _ask(parts, "bob@example.com")
    # A client cannot change what runs: only the approval id and the decision are read from an answer.
    parts.model.scripts = [text("Sent.")]
    await _answer(parts, approval_id, True)
    assert SENT_MAIL == ["bob@example.com"]


async def test_a_new_message_denies_the_waiting_call_first(parts: Parts):
    _, approval_id, _ = await _ask(parts)
    parts.model.scripts = [text("Sure.")]
    chunks = await _events(await parts.engine.start_turn(parts.session_id, "Never mind", user_id="alice"))
    assert chunks[-1]["type"] == "finish" and SENT_MAIL == []
    history = parts.model.requests[-1]["messages"]
    assert history[-2]["role"] == "tool" and json.loads(history[-2]["content"])["reason"] == SUPERSEDED
    assert history[-1] == {"role": "user", "content": "Never mind"}
    assert parts.approvals.records[(parts.session_id, approval_id)].state == "denied"
    with pytest.raises(Conflict):
        await parts.engine.answer_approvals(parts.session_id, [ApprovalAnswer(approval_id, True)], user_id="alice")


async def test_the_setting_replaces_the_tools_own_flags(parts: Parts):
    tools = parts.engine.deps.tools
    assert tools.needs_approval("send_mail") and not tools.needs_approval("add")
    tools.require_approval_for(("add",))
    assert tools.needs_approval("add") and not tools.needs_approval("send_mail")
    tools.require_approval_for(())
    assert not tools.needs_approval("send_mail")
    with pytest.raises(ConfigError):
        tools.require_approval_for(("no_such_tool",))
    tools.require_approval_for(None)
    assert tools.needs_approval("send_mail")


async def test_the_message_listing_names_the_approval_to_answer(parts: Parts):
    """A client that reloads finds the approval id of a waiting call in ``GET /sessions/{id}/messages`` (and of
    its denial afterwards); every other message has none."""
    from chatcore.web.openapi import sessions_openapi
    from chatcore.web.schemas import MessageOut, dump

    _, approval_id, _ = await _ask(parts)
    listed = [dump(MessageOut.of(m)) for m in _stored(parts).messages]
    assert [(m["role"], m["status"], m["approval_id"]) for m in listed] == [
        ("user", "complete", None),
        ("assistant", "complete", None),
        ("tool", "awaiting_approval", approval_id),
    ]
    await _answer(parts, approval_id, False)
    tool = next(dump(MessageOut.of(m)) for m in _stored(parts).messages if m.role == "tool")
    assert (tool["status"], tool["approval_id"]) == ("denied", approval_id)
    assert "approval_id" in sessions_openapi()["components"]["schemas"]["MessageOut"]["required"]
