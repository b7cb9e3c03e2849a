"""What the LLM sees: the system prompt, the stored summary, and the recent history within a token budget.

No tokenizer is downloaded (Lambda has no network for it on a cold path): tokens are estimated from characters,
conservatively. When the history outgrows the budget, the older part is summarised once and the summary is stored
with the seq it covers; later turns reuse it. The cut is always at a user message, so an assistant tool call and
its results are never separated. Truncation is the last resort when no summary can be made.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from chatcore.models import ChatMessage, ChatSession
from chatcore.ports import Clock

CHARS_PER_TOKEN = 3.5  # conservative for English and code; errs towards summarising early
ANSWER_RESERVE = 1024
SUMMARY_PROMPT = (
    "You summarise conversations. Summarise the conversation below for the assistant who continues it: keep the "
    "user's goals, facts, decisions, names, numbers and open questions. At most 200 words. Summary only."
)


def estimate_tokens(messages: list[dict[str, Any]]) -> int:
    return int(sum(len(json.dumps(m, ensure_ascii=False)) + 12 for m in messages) / CHARS_PER_TOKEN)


USER_CONTEXT_HEADING = "What you know about the user:"


def with_user_context(prompt: str, user_context: str) -> str:
    """The system prompt followed by the user's context block (``chatcore.user_context``), when there is one."""
    return f"{prompt}\n\n{USER_CONTEXT_HEADING}\n{user_context}" if user_context else prompt


def system_message(prompt: str, summary: str) -> dict[str, Any]:
    content = prompt
    if summary:
        content += f"\n\nSummary of the earlier conversation:\n{summary}"
    return {"role": "system", "content": content}


def _cut_points(messages: list[ChatMessage]) -> list[int]:
    """Indexes where the history may start: user messages (never between a tool call and its results)."""
    return [index for index, message in enumerate(messages) if message.role == "user"]


@dataclass(frozen=True)
class Context:
    messages: list[dict[str, Any]]
    new_summary: str | None = None  # a summary made by this call, to store
    summary_seq: int = 0


Summarise = Callable[[list[dict[str, Any]]], Awaitable[str]]


async def build_context(
    session: ChatSession, prompt: str, *, budget_tokens: int, summarise: Summarise | None
) -> Context:
    """The OpenAI messages for the next LLM call over ``session.messages`` (the new user message included)."""
    budget = max(256, budget_tokens - ANSWER_RESERVE)
    history, summary, summary_seq = _after_summary(session)
    messages = [system_message(prompt, summary), *[m.to_openai() for m in history]]
    if estimate_tokens(messages) <= budget:
        return Context(messages)

    cuts = _cut_points(history)
    # Keep the longest recent tail that fits in ~60% of the budget; summarise what comes before it.
    start = cuts[-1] if cuts else 0
    for index in cuts:
        tail = [m.to_openai() for m in history[index:]]
        if estimate_tokens(tail) <= budget * 0.6:
            start = index
            break
    older, recent = history[:start], history[start:]
    new_summary: str | None = None
    if older and summarise is not None:
        transcript = [m.to_openai() for m in older]
        if summary:
            transcript.insert(0, {"role": "system", "content": f"Earlier summary: {summary}"})
        try:
            new_summary = await summarise(
                [{"role": "system", "content": SUMMARY_PROMPT}, {"role": "user", "content": _render(transcript)}]
            )
        except Exception:  # a failed summary falls back to truncation below
            new_summary = None
    if new_summary:
        summary = new_summary
    covered = older[-1].seq if (new_summary and older and older[-1].seq is not None) else summary_seq
    messages = [system_message(prompt, summary), *[m.to_openai() for m in recent]]
    # Last resort: drop the oldest turns of the tail until it fits (the last user turn always stays).
    while estimate_tokens(messages) > budget:
        turn_starts = _cut_points(recent)
        if len(turn_starts) < 2:
            break
        recent = recent[turn_starts[1] :]
        messages = [system_message(prompt, summary), *[m.to_openai() for m in recent]]
    return Context(messages, new_summary, covered or 0)


def _after_summary(session: ChatSession) -> tuple[list[ChatMessage], str, int]:
    """The messages the stored summary does not cover, the summary and the seq it covers — or the whole path
    and no summary when the summary was made for another branch (its last message is not on this path)."""
    if session.context_summary and session.summary_seq:
        for index, message in enumerate(session.messages):
            if message.seq == session.summary_seq:
                return session.messages[index + 1 :], session.context_summary, session.summary_seq
    return list(session.messages), "", 0


def _render(transcript: list[dict[str, Any]]) -> str:
    lines = []
    for message in transcript:
        content = message.get("content") or ""
        if message.get("tool_calls"):
            calls = ", ".join(c["function"]["name"] for c in message["tool_calls"])
            content = f"{content} [called tools: {calls}]".strip()
        lines.append(f"{message['role']}: {content}")
    return "\n".join(lines)


class TimedCache:
    """A value refreshed at most every ``ttl`` seconds (the SSM system prompt)."""

    def __init__(self, load: Callable[[], str], ttl: float, *, clock: Clock = time.monotonic) -> None:
        self._load = load
        self._ttl = ttl
        self._clock = clock
        self._value: str | None = None
        self._at = 0.0

    def get(self) -> str:
        now = self._clock()
        if self._value is None or now - self._at > self._ttl:
            self._value = self._load()
            self._at = now
        return self._value
