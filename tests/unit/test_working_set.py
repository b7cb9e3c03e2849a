"""A turn's working set (``ChatSession.working_set``): what it holds, the decisions it cannot make alone
(``NeedsWholePath``: the engine plans again over the whole path), and that it is never cached as the whole session."""

from __future__ import annotations

import pytest

from chatcore.cache import RedisConnector, SessionCache
from chatcore.errors import NeedsWholePath
from chatcore.intents import Edit, NewMessage, Regenerate, RegenerateAnswer, Resend, Send, plan_turn
from chatcore.models import ChatMessage, ChatSession
from tests.unit.conftest import Parts
from tests.unit.conftest import stored as _stored


def _session(count: int, *, summary_seq: int = 0) -> ChatSession:
    """``count`` stored messages in one line, user first; user messages carry client ids ``c<seq>``."""
    session = ChatSession.new("alice", session_id="working-set-1")
    for seq in range(1, count + 1):
        user = seq % 2 == 1
        session.messages.append(
            ChatMessage(
                role="user" if user else "assistant",
                content=f"message {seq}",
                seq=seq,
                parent_seq=seq - 1,
                client_message_id=f"c{seq}" if user else None,
                turn_id=f"turn_{seq if user else seq - 1}",
            )
        )
    session.message_count = session.leaf_seq = count
    if summary_seq:
        session.context_summary, session.summary_seq = "so far", summary_seq
    return session


def test_the_working_set_starts_at_the_summarys_message_on_the_path():
    whole = _session(40, summary_seq=31)
    working = whole.working_set()
    assert working.partial and [m.seq for m in working.messages] == list(range(31, 41))
    assert working.misses_older() and not working.is_complete()
    assert whole.is_complete() and not whole.partial and not whole.misses_older()
    # Off the path (another branch's summary), or none: the whole path, still marked as a working set.
    whole.summary_seq = 99
    assert [m.seq for m in whole.working_set().messages] == list(range(1, 41))
    assert not whole.working_set().misses_older() and not whole.working_set().is_complete()


def test_decisions_over_the_working_set():
    working = _session(40, summary_seq=31).working_set()
    # Recent messages are known: the same text is a resend, another text an edit (its parent held).
    assert plan_turn(working, NewMessage("message 33", "c33")) == Resend("c33")
    assert plan_turn(working, NewMessage("better", "c33")) == Edit("better", "c33", 33, 32)
    # A new id is sent at once (its write tells if it was an older message's: DuplicateClientMessage).
    assert plan_turn(working, NewMessage("hello", "c-new")) == Send("hello", "c-new")
    assert plan_turn(working, RegenerateAnswer()) == Regenerate(39)
    assert plan_turn(working, RegenerateAnswer("turn_35")) == Regenerate(35)
    # What needs older messages: an older message named, an edit of the first message held (its parent is not).
    for intent in (RegenerateAnswer("turn_5"), RegenerateAnswer("c5"), NewMessage("better", "c31")):
        with pytest.raises(NeedsWholePath):
            plan_turn(working, intent)
    # The whole path decides them all.
    whole = _session(40, summary_seq=31)
    assert plan_turn(whole, RegenerateAnswer("turn_5")) == Regenerate(5)
    assert plan_turn(whole, NewMessage("better", "c31")) == Edit("better", "c31", 31, 30)


def test_an_answer_whose_turn_may_begin_before_the_working_set_needs_the_whole_path():
    working = _session(40, summary_seq=32).working_set()  # starts with an answer (32, of turn_31)
    with pytest.raises(NeedsWholePath):
        plan_turn(working, RegenerateAnswer(working.messages[0].message_id))


def test_a_new_message_while_approvals_wait_needs_the_whole_path():
    whole = _session(40, summary_seq=31)
    whole.messages.append(
        ChatMessage(role="tool", content="{}", seq=41, parent_seq=40, status="awaiting_approval", approval_id="a1")
    )
    whole.leaf_seq = whole.message_count = 41
    with pytest.raises(NeedsWholePath):  # its id may be an older message's: the waiting calls are not denied yet
        plan_turn(whole.working_set(), NewMessage("hello", "c-new"))
    assert plan_turn(whole, NewMessage("hello", "c-new")) == Send("hello", "c-new")


@pytest.mark.anyio
async def test_a_working_set_is_refused_as_the_whole_session():
    cache = SessionCache(RedisConnector(""), ttl_seconds=60)  # the guards run before any Redis call
    working = _session(10, summary_seq=5).working_set()
    with pytest.raises(ValueError, match="not the whole session"):
        await cache.put(working)
    with pytest.raises(ValueError, match="not a working set"):
        await cache.put_written(_session(10))
    with pytest.raises(ValueError, match="whole session"):
        await cache.put_written(working, whole=working)


@pytest.mark.anyio
async def test_regenerating_an_answer_older_than_the_working_set(parts: Parts):
    session = _stored(parts)
    for message in _session(40).messages:
        session.messages.append(message.model_copy(update={"seq": None, "parent_seq": None}))
    parts.sessions.add(session)
    stored = _stored(parts)
    stored.context_summary, stored.summary_seq, stored.title = "so far", 31, "titled"
    events = [e async for e in parts.engine.regenerate(parts.session_id, "alice", message_id="turn_5")]
    assert events[-1].chunk()["type"] == "finish"
    after = _stored(parts)
    assert after.messages[-1].parent_seq == 5 and after.leaf_seq == 41
    # The prompt is the path up to message 5 (the summary covers a later message: it is not on this path).
    prompt = parts.model.requests[-1]["messages"]
    assert [m["content"] for m in prompt[1:]] == [f"message {seq}" for seq in range(1, 6)]
    assert "so far" not in prompt[0]["content"]
