"""Chat turns over HTTP on loopback: the SSE stream, persistence, tools, titles, leases and idempotency."""

from __future__ import annotations

import json
import threading

import httpx
from pydantic import BaseModel

from chatcore.tools import MAX_RESULT_CHARS, TRUNCATED, ToolContext, ToolRegistry
from tests.conftest import ChatStack
from tests.support.sse import parse_sse


def ui_body(session_id: str, text: str, message_id: str = "msg-user-0001") -> dict:
    return {
        "id": session_id,
        "messages": [{"id": message_id, "role": "user", "parts": [{"type": "text", "text": text}]}],
        "trigger": "submit-message",
        "messageId": None,
    }


def history(chat: ChatStack, client: httpx.Client, session_id: str) -> list[dict]:
    return client.get(f"/sessions/{session_id}/messages?limit=200").json()["messages"]


def test_plain_answer_streams_and_is_persisted(chat_stack: ChatStack):
    with chat_stack.client() as client:
        sid = client.post("/sessions", json={}).json()["id"]
        response = client.post(f"/sessions/{sid}/stream", json={"message": "Hello there"})
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
        stream = parse_sse(response.text)
        assert stream.done
        types = stream.types
        assert types[:3] == ["start", "start-step", "text-start"]
        assert types[-1] == "finish"
        assert types.index("text-end") < types.index("finish-step")
        text = stream.text()
        assert 'You said: "Hello there"' in text
        messages = history(chat_stack, client, sid)
        assert [m["role"] for m in messages] == ["user", "assistant"]
        assert messages[0]["content"] == "Hello there"
        assert messages[1]["content"] == text
        assert messages[1]["usage"]["total_tokens"] > 0
        session = client.get(f"/sessions/{sid}").json()
        assert session["usage"] == messages[1]["usage"]
        title = stream.of_type("data-title")
        assert title and title[0]["data"]["title"] == "Hello There"
        assert session["title"] == "Hello There"


def _tool_pairs_complete(messages: list[dict]) -> bool:
    """Every assistant tool call has exactly one tool result right after it (what the next LLM call needs)."""
    for index, message in enumerate(messages):
        if message["role"] == "assistant" and message["tool_calls"]:
            ids = [c["id"] for c in message["tool_calls"]]
            following = [m["tool_call_id"] for m in messages[index + 1 : index + 1 + len(ids)] if m["role"] == "tool"]
            if sorted(following) != sorted(ids):
                return False
    results = [m["tool_call_id"] for m in messages if m["role"] == "tool"]
    return len(results) == len(set(results))


def test_ai_sdk_body_creates_the_session_for_the_caller(chat_stack: ChatStack):
    with chat_stack.client() as client:
        response = client.post("/chat", json=ui_body("client-made-id-0001", "Plan a trip"))
        assert response.status_code == 200
        assert parse_sse(response.text).done
        session = client.get("/sessions/client-made-id-0001").json()
        assert session["user_id"] == "alice" and session["message_count"] == 2
    with chat_stack.client("mallory") as other:
        hijack = other.post("/chat", json=ui_body("client-made-id-0001", "mine now", "msg-x-00001"))
        assert hijack.status_code == 404
        assert hijack.json()["error"]["code"] == "not_found"


def test_sync_tool_call_round_trip(chat_stack: ChatStack):
    with chat_stack.client() as client:
        sid = client.post("/sessions", json={}).json()["id"]
        prompt = 'Work it out [[tool:calculator {"expression": "6*7"}]]'
        stream = parse_sse(client.post(f"/sessions/{sid}/stream", json={"message": prompt}).text)
        assert stream.done
        start = stream.of_type("tool-input-start")[0]
        assert start["toolName"] == "calculator" and start["dynamic"] is True and start["providerExecuted"] is True
        available = stream.of_type("tool-input-available")[0]
        assert available["input"] == {"expression": "6*7"}
        output = stream.of_type("tool-output-available")[0]
        assert output["toolCallId"] == start["toolCallId"] and output["output"]["result"] == 42
        assert "42" in stream.text()
        assert stream.types.count("start-step") == 2 == stream.types.count("finish-step")
        messages = history(chat_stack, client, sid)
        assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant"]
        assert messages[1]["tool_calls"][0]["function"]["name"] == "calculator"
        assert json.loads(messages[2]["content"])["result"] == 42
        assert _tool_pairs_complete(messages)


def test_invalid_tool_arguments_become_an_error_result(chat_stack: ChatStack):
    with chat_stack.client() as client:
        sid = client.post("/sessions", json={}).json()["id"]
        prompt = '[[tool:calculator {"expression": "__import__(1)"}]] [[tool:calculator {"wrong": 1}]]'
        stream = parse_sse(client.post(f"/sessions/{sid}/stream", json={"message": prompt}).text)
        errors = stream.of_type("tool-output-error")
        assert len(errors) == 2 and all(e["errorText"] for e in errors)
        assert stream.types[-1] == "finish" and not stream.of_type("error")
        messages = history(chat_stack, client, sid)
        assert [m["status"] for m in messages if m["role"] == "tool"] == ["error", "error"]
        assert _tool_pairs_complete(messages)


def test_tool_rounds_are_bounded(table_name: str, redis_url: str):
    from tests.conftest import start_chat_stack, stop_chat_stack

    chat = start_chat_stack(table_name, redis_url, max_tool_rounds=1)
    try:
        with chat.client() as client:
            sid = client.post("/sessions", json={}).json()["id"]
            # The offline model calls the tool again whenever the last user message asks for it and tools are
            # offered: with one round allowed, the second round is answered with tool_choice "none".
            stream = parse_sse(client.post(f"/sessions/{sid}/stream", json={"message": "[[tool:current_time]]"}).text)
            assert stream.done and stream.types[-1] == "finish"
            messages = history(chat, client, sid)
            assert _tool_pairs_complete(messages)
            assert chat.llm.requests[-1].get("tool_choice") == "none"
    finally:
        stop_chat_stack(chat)


def test_concurrent_turn_gets_409(chat_stack: ChatStack):
    with chat_stack.client() as client:
        sid = client.post("/sessions", json={}).json()["id"]
        first: dict = {}

        def slow_turn() -> None:
            with chat_stack.client() as c:
                first["response"] = c.post(f"/sessions/{sid}/stream", json={"message": "slow [[fault:slow:1500]]"})

        thread = threading.Thread(target=slow_turn)
        thread.start()
        # Wait until the first turn holds the lease.
        for _ in range(100):
            if chat_stack.llm.requests:
                break
            threading.Event().wait(0.02)
        second = client.post(f"/sessions/{sid}/stream", json={"message": "me too [[fault:slow:3000]]"})
        thread.join(timeout=30)
        assert second.status_code == 409
        assert second.headers["content-type"] == "application/json"  # not one byte of a stream
        assert second.json()["error"]["code"] == "turn_in_progress"

        # Its model request went out with the lease write (issue 11: first token) and was cancelled on the 409.
        def content(body: dict) -> str:
            return str(body["messages"][-1]["content"])

        assert any("me too" in content(body) for body in chat_stack.llm.requests)
        deadline = threading.Event()
        for _ in range(100):
            if any("me too" in content(body) for body in chat_stack.llm.cut_streams):
                break
            deadline.wait(0.02)
        assert any("me too" in content(body) for body in chat_stack.llm.cut_streams)
        assert first["response"].status_code == 200 and parse_sse(first["response"].text).done
        messages = history(chat_stack, client, sid)
        assert [m["content"] for m in messages if m["role"] == "user"] == ["slow [[fault:slow:1500]]"]


def test_resend_of_a_client_message_id_does_not_start_a_second_turn(chat_stack: ChatStack):
    with chat_stack.client() as client:
        body = ui_body("resend-session-0001", "only once please", "client-msg-42")
        first = parse_sse(client.post("/chat", json=body).text)
        again = client.post("/chat", json=body)
        assert again.status_code == 200
        replayed = parse_sse(again.text)
        assert replayed.text() == first.text() and replayed.done
        assert all(event_id for event_id in replayed.ids)  # replayed from the log, with entry ids
        messages = history(chat_stack, client, "resend-session-0001")
        assert [m["role"] for m in messages] == ["user", "assistant"]
        assert len(chat_stack.llm.requests) == 2  # the answer and the title, once


def test_long_conversation_is_summarised_once_and_the_summary_is_stored(table_name: str, redis_url: str):
    from tests.conftest import start_chat_stack, stop_chat_stack

    chat = start_chat_stack(table_name, redis_url, llm_context_tokens=2000)
    try:
        with chat.client() as client:
            sid = client.post("/sessions", json={"title": "long"}).json()["id"]
            for n in range(8):
                stream = parse_sse(
                    client.post(f"/sessions/{sid}/stream", json={"message": f"Fact {n}. " + "blah " * 150}).text
                )
                assert stream.done and not stream.of_type("error")
            meta = chat.server.call(chat.service.store.load_meta(sid))
            assert meta.context_summary.startswith("Summary:") and meta.summary_seq > 0
            summaries = [r for r in chat.llm.requests if "You summarise" in json.dumps(r.get("messages", [])[:1])]
            answers = [r for r in chat.llm.requests if r.get("stream")]
            assert summaries and len(summaries) < len(answers)  # not recomputed every turn
            last = answers[-1]["messages"]
            assert "Summary of the earlier conversation" in last[0]["content"]
            assert last[1]["role"] == "user"  # the kept tail starts at a user message
            assert len(history(chat, client, sid)) == 16  # nothing was deleted: the summary only shapes the prompt
    finally:
        stop_chat_stack(chat)


def test_resend_after_the_replay_expired_is_409(chat_stack: ChatStack):
    import redis as redis_client

    with chat_stack.client() as client:
        body = ui_body("resend-session-0002", "once more", "client-msg-77")
        assert parse_sse(client.post("/chat", json=body).text).done
        raw = redis_client.Redis.from_url(chat_stack.settings.redis_url)
        for key in raw.scan_iter("chat:turn:*"):
            raw.delete(key)
        raw.close()
        again = client.post("/chat", json=body)
        assert again.status_code == 409 and again.json()["error"]["code"] == "duplicate_message"
        assert len(history(chat_stack, client, "resend-session-0002")) == 2


def test_anonymous_chat_when_allowed_and_claiming_the_session(table_name: str, redis_url: str):
    from tests.conftest import start_chat_stack, stop_chat_stack

    chat = start_chat_stack(table_name, redis_url, allow_anonymous=True)
    try:
        with httpx.Client(base_url=chat.url, timeout=30) as anonymous:
            stream = parse_sse(anonymous.post("/chat", json=ui_body("anon-session-0001", "hi there")).text)
            assert stream.done and not stream.of_type("error")
        stored = chat.server.call(chat.service.get_chat_session("anon-session-0001"))
        assert stored is not None and stored.user_id is None and len(stored.messages) == 2
        claimed = chat.server.call(chat.service.assign_user_to_session("anon-session-0001", "alice"))
        assert claimed is not None and claimed.user_id == "alice"
        with chat.client() as alice:
            assert alice.get("/sessions/anon-session-0001").status_code == 200
        with httpx.Client(base_url=chat.url, timeout=30) as anonymous:
            # Once owned, the anonymous caller no longer reaches it.
            assert anonymous.post("/chat", json=ui_body("anon-session-0001", "again", "m2")).status_code == 404
    finally:
        stop_chat_stack(chat)


class _BigArgs(BaseModel):
    size: int


def test_sync_tool_output_over_the_limit_is_cut_for_the_store_and_the_llm(chat_stack: ChatStack):
    tools: ToolRegistry = chat_stack.stack.engine.deps.tools

    @tools.tool("A tool with a very large answer.")
    async def big_output(args: _BigArgs, ctx: ToolContext) -> dict:
        return {"blob": "x" * args.size}

    with chat_stack.client() as client:
        sid = client.post("/sessions", json={}).json()["id"]
        prompt = '[[tool:big_output {"size": 50000}]]'
        stream = parse_sse(client.post(f"/sessions/{sid}/stream", json={"message": prompt}).text)
        assert stream.done and not stream.of_type("error")
        messages = history(chat_stack, client, sid)
        assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant"]
        stored = messages[2]["content"]
        assert len(stored) == MAX_RESULT_CHARS + len(TRUNCATED) and stored.endswith(TRUNCATED)
        assert stored.startswith('{"blob": "xxx') and messages[2]["status"] == "complete"
        sent = [m for m in chat_stack.llm.requests[-1]["messages"] if m["role"] == "tool"]
        assert [m["content"] for m in sent] == [stored]  # the next LLM request reads the cut result
        assert stream.of_type("tool-output-available")[0]["output"] == stored  # and the client sees the same


def test_unserialisable_tool_result_becomes_an_error_result(chat_stack: ChatStack):
    """999999**1000 has 6,000 digits: past Python's 4,300-digit int-to-str limit, so json.dumps raises."""
    with chat_stack.client() as client:
        sid = client.post("/sessions", json={}).json()["id"]
        prompt = '[[tool:calculator {"expression": "999999**1000"}]]'
        stream = parse_sse(client.post(f"/sessions/{sid}/stream", json={"message": prompt}).text)
        assert stream.done and stream.types[-1] == "finish" and not stream.of_type("error")
        error = stream.of_type("tool-output-error")[0]["errorText"]
        assert "cannot be encoded as JSON" in error and not stream.of_type("tool-output-available")
        assert "The tool calculator returned" in stream.text()  # the answer streams
        messages = history(chat_stack, client, sid)
        assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant"]
        tool = messages[2]
        assert tool["status"] == "error" and json.loads(tool["content"])["error"] == error
        assert messages[3]["content"] == stream.text() and _tool_pairs_complete(messages)


def test_concurrent_copies_of_one_message_all_replay_the_one_turn(chat_stack: ChatStack):
    """Issue 12 item 10: copies of a POST sent at the same moment got 409 turn_in_progress; a retrying client needs
    the replay of the first turn, as a later resend gets."""
    chat_stack.llm.token_delay = 0.01
    body = ui_body("concurrent-resend-01", "[[long:30]]", "client-msg-same")
    results: list[httpx.Response] = []
    lock = threading.Lock()

    def send() -> None:
        with chat_stack.client() as client:
            response = client.post("/chat", json=body)
            with lock:
                results.append(response)

    threads = [threading.Thread(target=send) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert [r.status_code for r in results] == [200] * 5, [r.text[:200] for r in results]
    streams = [parse_sse(r.text) for r in results]
    turn_ids = {s.of_type("start")[0]["messageId"] for s in streams}
    assert len(turn_ids) == 1 and all(s.done and len(s.text().split()) == 30 for s in streams)
    with chat_stack.client() as client:
        assert [m["role"] for m in history(chat_stack, client, "concurrent-resend-01")] == ["user", "assistant"]


def test_a_rename_during_the_first_turn_is_kept(chat_stack: ChatStack):
    """Issue 12 item 5: the title generated from the first message replaced a rename made while it was generated
    (the generated title is now written as ``if_not_exists(user_title, generated)``, in the answer's write or later)."""
    sid = "rename-during-first-turn"
    done: dict[str, httpx.Response] = {}

    def turn() -> None:
        with chat_stack.client() as c:
            done["response"] = c.post("/chat", json=ui_body(sid, "Plan a trip to Lisbon [[fault:slow:800]]"))

    thread = threading.Thread(target=turn)
    thread.start()
    with chat_stack.client() as client:
        for _ in range(200):
            if client.get(f"/sessions/{sid}").status_code == 200:
                break
            threading.Event().wait(0.01)
        assert client.patch(f"/sessions/{sid}", json={"title": "My own name"}).status_code == 200
        thread.join(timeout=30)
        assert parse_sse(done["response"].text).done
        threading.Event().wait(2.5)  # a late title would be saved within LATE_TITLE_SECONDS
        assert client.get(f"/sessions/{sid}").json()["title"] == "My own name"
        # Without a rename the generated title is stored as before.
        parse_sse(client.post("/chat", json=ui_body("rename-none-0001", "Plan a trip to Porto")).text)
        assert client.get("/sessions/rename-none-0001").json()["title"] == "Plan A Trip To Porto"
