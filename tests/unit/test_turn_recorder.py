"""The write that ends a turn holds what the user has already seen streamed: throttling that outlasts botocore's
retries is retried (with backoff, within ``retry_seconds``); nothing else is, and no earlier write of the turn."""

from __future__ import annotations

import asyncio

import pytest

from chatcore.errors import THROTTLING_CODES, ServiceRefused
from chatcore.models import ChatMessage, ChatSession, Usage
from chatcore.store import TurnGuard
from chatcore.turn_recorder import TurnRecorder
from tests.unit.fakes import InMemorySessions

pytestmark = pytest.mark.anyio
TURN = "turn_rec"


class RefusingSessions(InMemorySessions):
    """Refuses the next ``times`` writes with ``code`` (as ``chatcore.aws`` translates a ``ClientError``)."""

    def __init__(self, code: str, times: int) -> None:
        super().__init__()
        self.code, self.times = code, times
        self.attempts: list[bool] = []  # one per write asked for: did it end the turn

    async def upsert_chat_session(self, session: ChatSession, *, turn: TurnGuard | None = None) -> ChatSession:
        self.attempts.append(bool(turn and turn.release))
        if self.times > 0:
            self.times -= 1
            raise ServiceRefused(f"DynamoDB request failed ({self.code})", aws_code=self.code)
        return await super().upsert_chat_session(session, turn=turn)


async def _recorder(sessions: RefusingSessions, retry_seconds: float) -> TurnRecorder:
    session = sessions.add(ChatSession.new("alice"))
    held = await sessions.take(session, TURN, owner="alice", lease_seconds=30)
    held.messages.append(ChatMessage(role="user", content="hi", turn_id=TURN))
    return TurnRecorder(sessions, sessions, held, TURN, retry_seconds=retry_seconds)


def _contents(sessions: InMemorySessions) -> list[str]:
    (stored,) = sessions.sessions.values()
    return [m.content or "" for m in stored.messages]


@pytest.mark.parametrize("code", sorted(THROTTLING_CODES))
async def test_the_answer_write_outlasts_throttling(code: str):
    sessions = RefusingSessions(code, times=0)
    recorder = await _recorder(sessions, retry_seconds=10.0)
    await recorder.user_message()
    sessions.times = 3
    await recorder.answer("the streamed answer", Usage())
    assert sessions.attempts == [False, True, True, True, True]
    assert _contents(sessions) == ["hi", "the streamed answer"]  # once
    assert recorder.released and next(iter(sessions.sessions.values())).active_turn_id is None


async def test_throttling_past_the_budget_is_raised_and_stores_nothing():
    sessions = RefusingSessions("ThrottlingException", times=0)
    recorder = await _recorder(sessions, retry_seconds=0.5)
    await recorder.user_message()
    sessions.times = 1_000
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ServiceRefused) as refused:
        await recorder.answer("cannot be stored", Usage())
    assert refused.value.throttled and loop.time() - started < 0.5 + 0.1
    assert 2 <= sessions.attempts.count(True) <= 5
    assert _contents(sessions) == ["hi"] and not recorder.released


async def test_the_user_message_write_is_not_retried():
    # Its failure is the 503 before any byte of the answer: the client retries the request, not the server.
    sessions = RefusingSessions("ThrottlingException", times=1)
    recorder = await _recorder(sessions, retry_seconds=10.0)
    with pytest.raises(ServiceRefused):
        await recorder.user_message()
    assert sessions.attempts == [False]


@pytest.mark.parametrize("code", ["AccessDeniedException", "ResourceNotFoundException", "InternalServerError"])
async def test_other_refusals_of_the_answer_write_are_not_retried(code: str):
    sessions = RefusingSessions(code, times=0)
    recorder = await _recorder(sessions, retry_seconds=10.0)
    await recorder.user_message()
    sessions.times = 1
    with pytest.raises(ServiceRefused):
        await recorder.partial("what was streamed", Usage())
    assert sessions.attempts == [False, True]
