"""The context window: a stored summary, cuts at user messages, truncation as the last resort."""

from __future__ import annotations

import pytest

from chatcore.context import build_context, estimate_tokens, with_user_context
from chatcore.models import ChatMessage, ChatSession, ToolCall, ToolCallFunction

pytestmark = pytest.mark.anyio


def _session(turns: int, words: int = 200) -> ChatSession:
    session = ChatSession.new("u")
    seq = 0
    for n in range(turns):
        call = ToolCall(id=f"c{n}", function=ToolCallFunction(name="calc", arguments="{}"))
        for message in (
            ChatMessage(role="user", content=f"question {n} " + "word " * words),
            ChatMessage(role="assistant", tool_calls=[call]),
            ChatMessage(role="tool", tool_call_id=f"c{n}", content="1"),
            ChatMessage(role="assistant", content=f"answer {n} " + "word " * words),
        ):
            seq += 1
            message.seq = seq
            session.messages.append(message)
    session.message_count = seq
    return session


async def test_small_history_is_sent_whole():
    session = _session(2, words=5)
    context = await build_context(session, "SYS", budget_tokens=16_000, summarise=None)
    assert context.new_summary is None
    assert context.messages[0] == {"role": "system", "content": "SYS"}
    assert len(context.messages) == 1 + 8


async def test_long_history_is_summarised_once_at_a_user_message():
    session = _session(30)
    calls: list[list[dict]] = []

    async def summarise(messages):
        calls.append(messages)
        return "SUMMARY"

    context = await build_context(session, "SYS", budget_tokens=4000, summarise=summarise)
    assert len(calls) == 1 and context.new_summary == "SUMMARY"
    assert "SUMMARY" in context.messages[0]["content"]
    assert context.messages[1]["role"] == "user"  # the kept tail starts at a user message
    assert estimate_tokens(context.messages) <= 4000
    covered = context.summary_seq
    assert covered > 0 and session.messages[covered].role == "user"  # the message after the summary is a user's
    # Stored summary reused: the next turn does not summarise again.
    session.context_summary, session.summary_seq = "SUMMARY", covered
    again = await build_context(session, "SYS", budget_tokens=4000, summarise=summarise)
    assert len(calls) == 1 and again.new_summary is None
    ids = [m.get("tool_call_id") for m in again.messages if m["role"] == "tool"]
    called = [c["id"] for m in again.messages if m.get("tool_calls") for c in m["tool_calls"]]
    assert ids == called  # no tool result without its call and the other way round


async def test_failed_summary_falls_back_to_truncation():
    session = _session(30)

    async def broken(messages):
        raise RuntimeError("llm down")

    context = await build_context(session, "SYS", budget_tokens=4000, summarise=broken)
    assert context.new_summary is None and context.messages[1]["role"] == "user"
    assert estimate_tokens(context.messages) <= 4000
    assert context.messages[-1]["content"].startswith("answer 29")


def test_timed_cache_reloads_after_its_ttl_on_the_given_clock():
    from chatcore.context import TimedCache

    now = [100.0]
    loads: list[int] = []

    def load() -> str:
        loads.append(1)
        return f"prompt {len(loads)}"

    cache = TimedCache(load, 300.0, clock=lambda: now[0])
    assert cache.get() == "prompt 1"
    now[0] += 299
    assert cache.get() == "prompt 1" and len(loads) == 1
    now[0] += 2
    assert cache.get() == "prompt 2"


async def test_the_user_context_block_follows_the_prompt_and_precedes_the_summary():
    assert with_user_context("Be brief.", "") == "Be brief."  # no block without a context
    session = _session(2, words=5)
    session.context_summary, session.summary_seq = "They asked about otters.", 4  # covers the first exchange
    context = await build_context(
        session, with_user_context("Be brief.", "Lives in Lisbon."), budget_tokens=16_000, summarise=None
    )
    assert context.messages[0]["content"] == (
        "Be brief.\n\nWhat you know about the user:\nLives in Lisbon."
        "\n\nSummary of the earlier conversation:\nThey asked about otters."
    )


async def test_a_summary_of_another_branch_is_not_used():
    session = _session(2, words=5)
    session.context_summary, session.summary_seq = "A summary made on a branch this path does not hold.", 99
    context = await build_context(session, "Be brief.", budget_tokens=16_000, summarise=None)
    assert context.messages[0]["content"] == "Be brief."
    assert len(context.messages) == 1 + len(session.messages)  # the whole path instead
    session.summary_seq = 4  # on the path: the summary replaces the messages it covers
    covered = await build_context(session, "Be brief.", budget_tokens=16_000, summarise=None)
    assert "Summary of the earlier conversation" in covered.messages[0]["content"]
    assert len(covered.messages) == 1 + len(session.messages) - 4
