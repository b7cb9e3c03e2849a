"""The write that ends a turn holds what the user has already seen streamed: its guard gives the store a budget to
send the transaction again while DynamoDB throttles it (``TurnGuard.throttle_seconds``, tested against moto in
tests/integration/test_store.py); no earlier write of the turn has one."""

from __future__ import annotations

import pytest

from chatcore.models import ChatMessage, ChatSession, Usage
from chatcore.turn_recorder import TurnRecorder
from tests.unit.fakes import InMemorySessions

pytestmark = pytest.mark.anyio
TURN = "turn_rec"


async def _recorder(sessions: InMemorySessions, retry_seconds: float) -> TurnRecorder:
    session = sessions.add(ChatSession.new("alice"))
    held = await sessions.take(session, TURN, owner="alice", lease_seconds=30)
    held.messages.append(ChatMessage(role="user", content="hi", turn_id=TURN))
    return TurnRecorder(sessions, sessions, held, TURN, retry_seconds=retry_seconds)


def _guards(sessions: InMemorySessions) -> list[tuple[bool, float]]:
    return [(guard.release, guard.throttle_seconds) for _, guard in sessions.writes if guard is not None]


@pytest.mark.parametrize("last", ["answer", "partial", "round"])
async def test_only_the_write_that_ends_the_turn_may_outlast_throttling(last: str):
    sessions = InMemorySessions()
    recorder = await _recorder(sessions, retry_seconds=8.0)
    await recorder.user_message()
    assistant = ChatMessage(role="assistant", content="", turn_id=TURN)
    await recorder.round(assistant, [], last=False)
    if last == "answer":
        await recorder.answer("the streamed answer", Usage())
    elif last == "partial":
        await recorder.partial("what was streamed", Usage())
    else:
        await recorder.round(assistant.model_copy(update={"seq": None}), [], last=True)
    assert _guards(sessions) == [(False, 0.0), (False, 0.0), (True, 8.0)]
    assert recorder.released
