"""The session service API the design documents name: round trip, isolation, cache behaviour."""

from __future__ import annotations

import pytest
import redis

from chatcore.cache import session_key
from chatcore.config import Settings
from chatcore.models import ChatMessage, ChatSession, ToolCall, ToolCallFunction, Usage
from chatcore.sessions import SessionService

pytestmark = pytest.mark.anyio


def _history() -> list[ChatMessage]:
    calls = [
        ToolCall(id="call_a", function=ToolCallFunction(name="calc", arguments='{"expression":"6*7"}')),
        ToolCall(id="call_b", function=ToolCallFunction(name="current_time", arguments="{}")),
    ]
    return [
        ChatMessage(role="system", content="You are terse."),
        ChatMessage(role="user", content="6*7 and the time?", client_message_id="u-1"),
        ChatMessage(role="assistant", content=None, tool_calls=calls, usage=Usage(prompt_tokens=10, total_tokens=10)),
        ChatMessage(role="tool", tool_call_id="call_a", content="42"),
        ChatMessage(role="tool", tool_call_id="call_b", content="2026-11-23T10:00:00Z"),
        ChatMessage(
            role="assistant", content="42, and it is 10:00 UTC.", usage=Usage(completion_tokens=9, total_tokens=9)
        ),
    ]


async def test_saved_session_reads_back_equal(service: SessionService):
    session = ChatSession.new("alice", title="maths")
    session.messages = _history()
    saved = await service.upsert_chat_session(session)
    again = await service.get_chat_session(saved.session_id, "alice")
    assert again is not None
    assert again.model_dump() == saved.model_dump()
    assert again.usage == [Usage(prompt_tokens=10, total_tokens=10), Usage(completion_tokens=9, total_tokens=9)]
    assert again.usage_totals == Usage(prompt_tokens=10, completion_tokens=9, total_tokens=19)


async def test_another_user_reads_none(service: SessionService):
    saved = await service.upsert_chat_session(ChatSession.new("alice"))
    assert await service.get_chat_session(saved.session_id, "mallory") is None
    # from DynamoDB too, not only from the cache
    await service.invalidate_session_cache(saved.session_id)
    assert await service.get_chat_session(saved.session_id, "mallory") is None
    assert await service.get_chat_session(saved.session_id) is not None
    assert await service.get_chat_session("not a valid id") is None
    assert await service.get_chat_session("nonexistent-session-id") is None


async def test_deleting_the_cache_key_reloads_the_complete_session(service: SessionService, settings: Settings):
    session = ChatSession.new("alice")
    session.messages = _history()
    saved = await service.upsert_chat_session(session)
    raw = redis.Redis.from_url(settings.redis_url)
    assert raw.exists(session_key(saved.session_id))
    raw.delete(session_key(saved.session_id))
    loaded = await service.get_chat_session(saved.session_id, "alice")
    assert loaded is not None
    expected = [(m.role, m.content, m.tool_calls, m.tool_call_id) for m in _history()]
    assert [(m.role, m.content, m.tool_calls, m.tool_call_id) for m in loaded.messages] == expected
    assert loaded.to_openai_messages() == saved.to_openai_messages()
    assert raw.exists(session_key(saved.session_id))  # read-through filled it again
    raw.close()


async def test_cache_never_goes_back_to_an_older_version(service: SessionService):
    saved = await service.upsert_chat_session(ChatSession.new("alice"))
    old = saved.model_copy(deep=True)
    saved.messages.append(ChatMessage(role="user", content="new"))
    newer = await service.upsert_chat_session(saved)
    assert await service.cache.put(old) is False  # a slow writer finishing late
    cached = await service.cache.get(saved.session_id)
    assert cached is not None and cached.version == newer.version and cached.message_count == 1


async def test_invalidation_with_version_blocks_stale_read_through(service: SessionService):
    saved = await service.upsert_chat_session(ChatSession.new("alice"))
    stale_read = await service.store.load(saved.session_id)
    assert stale_read is not None
    renamed = await service.update_session_title(saved.session_id, "renamed", "alice")
    assert renamed is not None
    # A reader that loaded before the rename tries to fill the cache after it: refused.
    assert await service.cache.put(stale_read) is False
    current = await service.get_chat_session(saved.session_id, "alice")
    assert current is not None and current.title == "renamed"


async def test_deleted_session_is_not_served_from_cache(service: SessionService):
    saved = await service.upsert_chat_session(ChatSession.new("alice"))
    snapshot = await service.get_chat_session(saved.session_id, "alice")
    assert snapshot is not None
    assert await service.delete_session(saved.session_id, "alice") is True
    assert await service.cache.put(snapshot) is False
    assert await service.get_chat_session(saved.session_id, "alice") is None


async def test_update_session_title_and_owner_check(service: SessionService):
    saved = await service.upsert_chat_session(ChatSession.new("alice"))
    assert await service.update_session_title(saved.session_id, "nope", "mallory") is None
    updated = await service.update_session_title(saved.session_id, "Weekend plans")
    assert updated is not None and updated.title == "Weekend plans" and updated.version == saved.version + 1
    loaded = await service.get_chat_session(saved.session_id, "alice")
    assert loaded is not None and loaded.title == "Weekend plans"


async def test_assign_user_claims_anonymous_but_never_takes_over(service: SessionService):
    anonymous = await service.upsert_chat_session(ChatSession.new(None))
    assert await service.get_chat_session(anonymous.session_id, "alice") is None
    claimed = await service.assign_user_to_session(anonymous.session_id, "alice")
    assert claimed is not None and claimed.user_id == "alice"
    assert await service.get_chat_session(anonymous.session_id, "alice") is not None
    assert await service.assign_user_to_session(anonymous.session_id, "mallory") is None
    still = await service.get_chat_session(anonymous.session_id)
    assert still is not None and still.user_id == "alice"


async def test_corrupt_cache_entry_is_a_miss(service: SessionService, settings: Settings):
    saved = await service.upsert_chat_session(ChatSession.new("alice"))
    raw = redis.Redis.from_url(settings.redis_url)
    raw.hset(session_key(saved.session_id), "d", b"{not json")
    loaded = await service.get_chat_session(saved.session_id, "alice")
    assert loaded is not None and loaded.session_id == saved.session_id
    raw.close()


async def test_module_level_api_uses_default_service(lambda_env: Settings):
    from chatcore import sessions

    saved = await sessions.upsert_chat_session(ChatSession.new("alice"))
    assert await sessions.get_chat_session(saved.session_id, "alice") is not None
    assert await sessions.update_session_title(saved.session_id, "t") is not None
    await sessions.invalidate_session_cache(saved.session_id)
    assert await sessions.assign_user_to_session(saved.session_id, "bob") is None
    await sessions.default_service().aclose()
    assert sessions.default_service() is sessions.default_service()  # the one process-wide container's
