"""`stream_chat_completion(session_id, message, user_id=...)`, in-process, with the event classes the design names."""

from __future__ import annotations

import pytest

from chatcore.config import Settings
from chatcore.container import Container
from chatcore.models import ChatSession
from chatcore.stream import (
    StreamData,
    StreamFinish,
    StreamFinishStep,
    StreamStart,
    StreamStartStep,
    StreamTextDelta,
    StreamTextEnd,
    StreamTextStart,
    StreamToolInputAvailable,
    StreamToolInputStart,
    StreamToolOutputAvailable,
)
from local.offline_llm import OfflineLLM

pytestmark = pytest.mark.anyio


async def test_stream_chat_completion_yields_the_named_events_and_persists(settings: Settings):
    with OfflineLLM() as llm:
        config = Settings(**{**settings.__dict__, "llm_base_url": llm.base_url, "llm_api_key": "offline"})
        container = Container(config)
        service, engine = container.sessions, container.engine
        try:
            session = await service.upsert_chat_session(ChatSession.new("alice"))
            events = [
                e
                async for e in engine.stream_chat_completion(
                    session.session_id, 'What is 7*6? [[tool:calculator {"expression": "7*6"}]]', "alice"
                )
            ]
            kinds = [type(e) for e in events]
            assert kinds[0] is StreamStart and kinds[-1] is StreamFinish
            for expected in (
                StreamStartStep,
                StreamToolInputStart,
                StreamToolInputAvailable,
                StreamToolOutputAvailable,
                StreamTextStart,
                StreamTextDelta,
                StreamTextEnd,
                StreamFinishStep,
                StreamData,
            ):
                assert expected in kinds, expected
            text = "".join(e.delta for e in events if isinstance(e, StreamTextDelta))
            stored = await service.get_chat_session(session.session_id, "alice")
            assert stored is not None
            assert [m.role for m in stored.messages] == ["user", "assistant", "tool", "assistant"]
            assert stored.messages[-1].content == text
            assert stored.usage_totals.total_tokens > 0 and stored.usage_totals == stored.messages[-1].usage
            assert stored.usage == [stored.messages[-1].usage]
            assert stored.title  # generated and stored with the turn
        finally:
            await engine.aclose()
            await service.aclose()


async def test_regenerate_edit_and_approve_in_process(settings: Settings):
    """The in-process equivalents of useChat's regenerate(), edit and approval answers (``chatcore.runtime``)."""
    from chatcore import runtime
    from chatcore.container import set_default_container
    from chatcore.stream import StreamToolApprovalRequest, StreamToolOutputAvailable

    with OfflineLLM() as llm:
        config = Settings(**{**settings.__dict__, "llm_base_url": llm.base_url, "llm_api_key": "offline"})
        container = Container(config)
        set_default_container(lambda: container)
        service = container.sessions
        try:
            sid = (await service.upsert_chat_session(ChatSession.new("alice"))).session_id
            [_ async for _ in runtime.stream_chat_completion(sid, "First", "alice", client_message_id="u-1")]
            again = [e async for e in runtime.regenerate(sid, "alice")]
            assert isinstance(again[0], StreamStart) and isinstance(again[-1], StreamFinish)
            edited = [e async for e in runtime.edit_message(sid, "u-1", "Second", "alice")]
            assert 'You said: "Second"' in "".join(e.delta for e in edited if isinstance(e, StreamTextDelta))
            stored = await service.get_chat_session(sid, "alice")
            assert stored is not None and stored.messages[0].content == "Second"
            _, everything = await service.store.load_tree(sid) or (None, [])
            assert len(everything) == 5  # first, its two answers, the edit and its answer: nothing deleted

            asked = [e async for e in runtime.stream_chat_completion(sid, "rename this chat to Rome", "alice")]
            request = next(e for e in asked if isinstance(e, StreamToolApprovalRequest))
            answered = [e async for e in runtime.answer_approval(sid, request.approval_id, True, "alice")]
            assert any(isinstance(e, StreamToolOutputAvailable) for e in answered)
            assert (await service.get_chat_session(sid, "alice")).title == "Rome"
        finally:
            set_default_container(None)
            await container.engine.aclose()
            await service.aclose()
