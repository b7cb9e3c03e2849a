"""The one writer of a turn's session: the user message, each tool round, the answer (or what was produced before a
failure or a stop). Every write is guarded by the turn's lease; the last one gives the lease back in the same
write; a title that is ready rides along (``TitleTask.take``).

The last write holds what the user has already seen streamed, so it outlasts throttling: its guard lets the store
send the transaction again while DynamoDB still refuses it for its rate after botocore's retries (their backoff
alone may take ~15 s), with backoff, for up to ``retry_seconds`` more (``TurnGuard.throttle_seconds``: nothing of a
throttled request was applied, and the lease condition refuses a write the turn no longer owns). Earlier writes
are not: the user message's failure is the 503 that comes before any byte."""

from __future__ import annotations

import contextlib

from chatcore.errors import ChatError
from chatcore.models import ChatMessage, ChatSession, Usage
from chatcore.ports import SessionRepository, TurnLeases
from chatcore.store import TurnGuard
from chatcore.titles import TitleTask


class TurnRecorder:
    def __init__(
        self,
        sessions: SessionRepository,
        leases: TurnLeases,
        session: ChatSession,
        turn_id: str,
        *,
        branch_from: int | None = None,
        answer_id: str | None = None,
        retry_seconds: float = 0.0,
    ) -> None:
        self._sessions = sessions
        self._retry_seconds = retry_seconds
        self.answer_id = answer_id or turn_id  # the assistant message the stored messages belong to
        # A regenerated answer: its first stored message follows this one instead of the session's leaf.
        self._branch_from = branch_from
        self._leases = leases
        self.session = session
        self.turn_id = turn_id
        self.title = TitleTask.none()
        self.released = False

    async def user_message(self) -> None:
        """Store the turn's new user message (nothing is streamed before this succeeded)."""
        await self._write(release=False)

    async def round(self, assistant: ChatMessage, results: list[ChatMessage], *, last: bool) -> ChatSession:
        """A tool round: the assistant's calls and their results together, so no call is stored without its
        result. The last round (a long-running tool, or the round limit) ends the turn."""
        self.session.messages += [assistant, *results]
        await self._write(release=last)
        return self.session

    async def answer(self, text: str, usage: Usage) -> None:
        self.session.messages.append(ChatMessage(role="assistant", content=text, turn_id=self.answer_id, usage=usage))
        await self._write(release=True)

    async def partial(self, text: str, usage: Usage) -> None:
        """What was produced before a failure or a stop (unfinished tool calls are dropped)."""
        if text:
            self.session.messages.append(
                ChatMessage(role="assistant", content=text, status="partial", turn_id=self.answer_id, usage=usage)
            )
        await self._write(release=True)

    async def release(self) -> None:
        """Give the lease back if no write did (a crash between writes)."""
        if not self.released:
            with contextlib.suppress(ChatError):
                await self._leases.release(self.session.session_id, self.turn_id)
            self.released = True

    async def _write(self, *, release: bool) -> None:
        self.title.take(self.session)
        first_new = next((m for m in self.session.messages if m.seq is None), None)
        if first_new is not None and self._branch_from is not None:
            first_new.parent_seq, self._branch_from = self._branch_from, None
        guard = TurnGuard(self.turn_id, release, throttle_seconds=self._retry_seconds if release else 0.0)
        self.session = await self._sessions.upsert_chat_session(self.session, turn=guard)
        self.released = release
