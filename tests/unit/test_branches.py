"""Regenerate, edit and resend against the engine with in-memory fakes: every row of the decision table in
``chatcore.intents``, what the LLM is asked, and that nothing stored is ever deleted."""

from __future__ import annotations

import pytest

from chatcore.errors import Conflict, NotFound, ValidationFailed
from chatcore.intents import (
    Edit,
    NewMessage,
    Regenerate,
    RegenerateAnswer,
    Resend,
    Send,
    plan_turn,
)
from chatcore.models import ChatMessage, ChatSession
from chatcore.turn_types import ExistingTurn, TurnHandle
from tests.unit.conftest import Parts
from tests.unit.conftest import stored as _stored
from tests.unit.fakes import text

pytestmark = pytest.mark.anyio


def _session(*rows: tuple[str, str, str | None, str | None]) -> ChatSession:
    """A one-line session from (role, content, client id, turn id) rows."""
    session = ChatSession.new("alice")
    for seq, (role, content, cmid, turn) in enumerate(rows, start=1):
        session.messages.append(
            ChatMessage(role=role, content=content, client_message_id=cmid, turn_id=turn, seq=seq, parent_seq=seq - 1)
        )
    session.message_count = session.leaf_seq = len(rows)
    return session


CONVERSATION = _session(
    ("user", "first", "u1", "turn_a"),
    ("assistant", "answer one", None, "turn_a"),
    ("user", "second", "u2", "turn_b"),
    ("assistant", None, None, "turn_b"),  # a tool round: the call ...
    ("tool", "{}", None, "turn_b"),  # ... and its result
    ("assistant", "answer two", None, "turn_b"),
)


# -- the decision table, row by row ------------------------------------------------------------------------------
def test_a_new_id_is_a_new_message():
    assert plan_turn(CONVERSATION, NewMessage("third", "u3")) == Send("third", "u3")
    assert plan_turn(CONVERSATION, NewMessage("third", None)) == Send("third", None)


def test_a_stored_id_with_the_same_text_is_a_resend():
    assert plan_turn(CONVERSATION, NewMessage("second", "u2")) == Resend("u2")


def test_a_stored_id_with_other_text_is_an_edit_from_the_same_parent():
    assert plan_turn(CONVERSATION, NewMessage("second, edited", "u2")) == Edit("second, edited", "u2", 3, 2)
    assert plan_turn(CONVERSATION, NewMessage("first, edited", "u1")) == Edit("first, edited", "u1", 1, 0)


def test_regenerate_without_an_id_answers_the_last_user_message_again():
    assert plan_turn(CONVERSATION, RegenerateAnswer()) == Regenerate(3)


def test_regenerate_by_turn_id_starts_before_the_whole_answer():
    assert plan_turn(CONVERSATION, RegenerateAnswer("turn_b")) == Regenerate(3)
    assert plan_turn(CONVERSATION, RegenerateAnswer("turn_a")) == Regenerate(1)


def test_regenerate_by_user_message_id_answers_that_message():
    assert plan_turn(CONVERSATION, RegenerateAnswer("u1")) == Regenerate(1)


def test_regenerate_after_a_failed_turn_answers_the_trailing_user_message():
    failed = _session(("user", "hello", "u1", "turn_a"))
    assert plan_turn(failed, RegenerateAnswer()) == Regenerate(1)


def test_regenerate_of_nothing_or_of_an_unknown_id_is_refused():
    with pytest.raises(ValidationFailed):
        plan_turn(ChatSession.new("alice"), RegenerateAnswer())
    with pytest.raises(NotFound):
        plan_turn(CONVERSATION, RegenerateAnswer("turn_elsewhere"))


def test_regenerate_and_edit_wait_for_a_running_background_tool():
    pending = CONVERSATION.model_copy(deep=True)
    pending.messages[4].status = "pending"
    with pytest.raises(Conflict):
        plan_turn(pending, RegenerateAnswer())
    with pytest.raises(Conflict):
        plan_turn(pending, NewMessage("second, edited", "u2"))
    assert plan_turn(pending, NewMessage("second", "u2")) == Resend("u2")


# -- the engine: what is stored and what the LLM reads -----------------------------------------------------------
async def _send(parts: Parts, message: str, cmid: str, answer: str) -> TurnHandle:
    parts.model.scripts = [text(answer)]
    started = await parts.engine.start_turn(parts.session_id, message, user_id="alice", client_message_id=cmid)
    assert isinstance(started, TurnHandle) and started.task is not None
    await started.task
    return started


async def _regenerate(parts: Parts, answer: str, message_id: str | None = None) -> TurnHandle:
    parts.model.scripts = [text(answer)]
    started = await parts.engine.submit(parts.session_id, RegenerateAnswer(message_id), user_id="alice")
    assert isinstance(started, TurnHandle) and started.task is not None
    await started.task
    return started


def _path(parts: Parts) -> list[tuple[str, str | None]]:
    return [(m.role, m.content) for m in _stored(parts).messages]


async def test_regenerate_adds_a_sibling_answer_and_deletes_nothing(parts: Parts):
    await _send(parts, "Hello", "u1", "First answer.")
    again = await _regenerate(parts, "Second answer.")
    assert _path(parts) == [("user", "Hello"), ("assistant", "Second answer.")]
    tree = parts.sessions.trees[parts.session_id]
    assert [(m.seq, m.parent_seq, m.content) for m in tree] == [
        (1, 0, "Hello"),
        (2, 1, "First answer."),
        (3, 1, "Second answer."),
    ]
    assert _stored(parts).versions == {3: [tree[1].message_id, tree[2].message_id]}
    assert tree[2].turn_id == again.turn_id != tree[1].turn_id
    # The LLM answered the user message again: the old answer is not in its history.
    history = parts.model.requests[-1]["messages"]
    assert history[-1] == {"role": "user", "content": "Hello"}
    assert all(m.get("content") != "First answer." for m in history)


async def test_regenerate_an_earlier_answer_branches_there(parts: Parts):
    first = await _send(parts, "One", "u1", "Answer one.")
    await _send(parts, "Two", "u2", "Answer two.")
    await _regenerate(parts, "Answer one, again.", first.turn_id)
    assert _path(parts) == [("user", "One"), ("assistant", "Answer one, again.")]
    assert len(parts.sessions.trees[parts.session_id]) == 5  # the second exchange is kept on its branch


async def test_edit_creates_a_new_version_that_the_llm_reads(parts: Parts):
    await _send(parts, "What is 2+2?", "u1", "4.")
    await _send(parts, "What is 3+3?", "u1", "6.")  # the same id, other text: an edit
    assert _path(parts) == [("user", "What is 3+3?"), ("assistant", "6.")]
    history = parts.model.requests[-1]["messages"]
    assert [m["content"] for m in history[1:]] == ["What is 3+3?"]
    tree = parts.sessions.trees[parts.session_id]
    assert [(m.seq, m.parent_seq, m.edit_of) for m in tree] == [(1, 0, None), (2, 1, None), (3, 0, 1), (4, 3, None)]
    assert _stored(parts).versions == {3: [tree[0].message_id, tree[2].message_id]}


async def test_editing_back_to_an_earlier_text_is_a_third_version(parts: Parts):
    await _send(parts, "A", "u1", "a.")
    await _send(parts, "B", "u1", "b.")
    await _send(parts, "A", "u1", "a again.")
    assert _path(parts) == [("user", "A"), ("assistant", "a again.")]
    tree = parts.sessions.trees[parts.session_id]
    assert _stored(parts).versions[5] == [tree[0].message_id, tree[2].message_id, tree[4].message_id]


async def test_a_resend_of_the_same_text_starts_no_turn(parts: Parts):
    first = await _send(parts, "Hello", "u1", "Hi.")
    requests = len(parts.model.requests)
    again = await parts.engine.start_turn(parts.session_id, "Hello", user_id="alice", client_message_id="u1")
    assert isinstance(again, ExistingTurn) and again.turn_id == first.turn_id
    assert len(parts.model.requests) == requests and len(parts.sessions.trees[parts.session_id]) == 2
