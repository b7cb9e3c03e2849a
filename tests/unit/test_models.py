from __future__ import annotations

from chatcore.models import (
    ChatMessage,
    ChatSession,
    ToolCall,
    ToolCallFunction,
    Usage,
    active_path,
    is_valid_session_id,
    version_groups,
)


def _conversation() -> ChatSession:
    session = ChatSession.new("user-1", title="Trip", metadata={"tags": ["a", 1, None, {"x": 1.5}]})
    call = ToolCall(id="call_1", function=ToolCallFunction(name="current_time", arguments='{"tz":"UTC"}'))
    session.messages = [
        ChatMessage(role="system", content="be brief"),
        ChatMessage(role="user", content="what time is it?", client_message_id="c1"),
        ChatMessage(role="assistant", content=None, tool_calls=[call], usage=Usage(prompt_tokens=3, total_tokens=3)),
        ChatMessage(role="tool", tool_call_id="call_1", content='{"now":"12:00"}'),
        ChatMessage(role="assistant", content="It is noon. 🕛"),
    ]
    return session


def test_new_session_has_fresh_unguessable_id():
    ids = {ChatSession.new("u").session_id for _ in range(200)}
    assert len(ids) == 200
    assert all(is_valid_session_id(i) and len(i) >= 20 for i in ids)
    session = ChatSession.new(None)
    assert session.user_id is None and session.version == 0 and session.messages == []


def test_json_round_trip_is_exact():
    session = _conversation()
    restored = ChatSession.model_validate_json(session.model_dump_json())
    assert restored == session
    assert restored.model_dump_json() == session.model_dump_json()


def test_to_openai_messages_keeps_tool_calls_and_results():
    messages = _conversation().to_openai_messages()
    assert messages[0] == {"role": "system", "content": "be brief"}
    assert messages[1] == {"role": "user", "content": "what time is it?"}
    assert messages[2] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "current_time", "arguments": '{"tz":"UTC"}'}}
        ],
    }
    assert messages[3] == {"role": "tool", "tool_call_id": "call_1", "content": '{"now":"12:00"}'}
    assert messages[4] == {"role": "assistant", "content": "It is noon. 🕛"}


def test_usage_adds_up():
    total = Usage(prompt_tokens=1, completion_tokens=2, total_tokens=3) + Usage(prompt_tokens=4, total_tokens=4)
    assert total == Usage(prompt_tokens=5, completion_tokens=2, total_tokens=7)


def test_changed_fields_tracks_edits_since_last_clean_state():
    session = _conversation()
    assert session.changed_fields() == {}
    session.title = "New"
    session.metadata["tags"].append("b")
    assert set(session.changed_fields()) == {"title", "metadata"}
    session.mark_clean()
    assert session.changed_fields() == {}


def test_is_complete_requires_the_whole_path_from_the_root_to_the_leaf():
    session = _conversation()
    assert not session.is_complete()
    for seq, message in enumerate(session.messages, start=1):
        message.seq, message.parent_seq = seq, seq - 1
    session.message_count = session.leaf_seq = len(session.messages)
    assert session.is_complete()
    session.leaf_seq = 9  # the active leaf is not the last message held
    assert not session.is_complete()
    session.leaf_seq = len(session.messages)
    session.messages[2].seq = 7  # a hole in the chain of parents
    assert not session.is_complete()


def test_active_path_follows_parents_and_versions_name_the_siblings():
    rows = [
        (1, 0, "user"),
        (2, 1, "assistant"),
        (3, 2, "user"),
        (4, 3, "assistant"),
        (5, 3, "assistant"),
        (6, 2, "user"),
    ]
    messages = [ChatMessage(role=role, content=str(seq), seq=seq, parent_seq=parent) for seq, parent, role in rows]
    path = active_path(messages, 5)
    assert [m.seq for m in path] == [1, 2, 3, 5]
    ids = {m.seq: m.message_id for m in messages}
    assert version_groups(messages, path) == {3: [ids[3], ids[6]], 5: [ids[4], ids[5]]}
    assert [m.seq for m in active_path(messages, 6)] == [1, 2, 6]
    assert active_path(messages, 0) == []


def test_session_id_validation():
    assert is_valid_session_id("abcdEFGH1234_-")
    for bad in ["", "short", "has space here", "a" * 129, "../../etc", "ünïcödé-id-x", "id#with#hash"]:
        assert not is_valid_session_id(bad)


def test_usage_is_a_list_per_model_call_and_round_trips():
    session = _conversation()
    session.usage = [Usage(prompt_tokens=3, total_tokens=3), Usage(completion_tokens=2, total_tokens=2)]
    session.usage_totals = Usage.total(session.usage)
    restored = ChatSession.model_validate_json(session.model_dump_json())
    assert restored.usage == session.usage and restored.usage_totals == Usage(
        prompt_tokens=3, completion_tokens=2, total_tokens=5
    )
    assert restored.model_dump_json() == session.model_dump_json()
