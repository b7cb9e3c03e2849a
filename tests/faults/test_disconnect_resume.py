"""A client disconnects mid-answer (a reload, a dropped network) and resumes, as ``useChat`` does: what it sees
across the cut, and what is stored. (A full replay after a cut, Last-Event-ID while live, stop and another user's
resume are in tests/integration/test_chat_resume.py.)"""

from __future__ import annotations

import time

import httpx

from tests.conftest import ChatStack
from tests.faults.support import lease_held, roles_and_text, stored, turn_running
from tests.integration.test_chat_turns import ui_body
from tests.support.sse import ParsedStream, parse_sse

WORDS = 150


def _read(response: httpx.Response, events: int | None) -> ParsedStream:
    """Read SSE events (all, or the first ``events``), then stop reading: the caller closes the connection."""
    body = ""
    for piece in response.iter_text():
        body += piece
        if events is not None and body.count("\n\n") >= events:
            break
    complete = body if events is None else body[: body.rfind("\n\n") + 2]
    return parse_sse(complete)


def test_disconnect_then_resume_twice_sees_every_chunk_once(chat_stack: ChatStack):
    """The POST's live stream is cut; the client resumes (``GET``: the whole turn from its first chunk, as
    ``useChat``'s ``resumeStream`` expects), is cut again, and resumes with ``Last-Event-ID``. User sees: a replay
    that starts with exactly the chunks it had, then the rest, no chunk twice or missing, ending in ``finish`` and
    ``[DONE]``. Stored: the user message and the whole answer, once each; the lease given back."""
    chat_stack.llm.token_delay = 0.01
    sid = "resume-faults-session-0001"
    with chat_stack.client() as client:
        with client.stream("POST", "/chat", json=ui_body(sid, f"[[long:{WORDS}]]", "m-cut-1")) as response:
            assert response.status_code == 200
            first = _read(response, 8)
        assert not first.done
        with client.stream("GET", f"/chat/{sid}/stream") as response:
            assert response.status_code == 200
            second = _read(response, 40)
        assert second.chunks[: len(first.chunks)] == first.chunks and not second.done
        last_id = next(i for i in reversed(second.ids) if i is not None)
        third = parse_sse(client.get(f"/chat/{sid}/stream", headers={"last-event-id": last_id}).text)
        assert third.done

        seen = second.chunks[: second.ids.index(last_id) + 1] + third.chunks
        ids = [i for i in second.ids + third.ids if i is not None]
        assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-")))) and len(set(ids)) == len(ids)
        assert seen[0]["type"] == "start" and seen[-1]["type"] == "finish"
        assert sum(1 for c in seen if c["type"] in ("start", "text-start")) == 2
        text = "".join(c["delta"] for c in seen if c["type"] == "text-delta")
        assert len(text.split()) == WORDS
    assert roles_and_text(stored(chat_stack, sid)) == [
        ("user", f"[[long:{WORDS}]]", "complete"),
        ("assistant", text, "complete"),
    ]
    assert not lease_held(chat_stack, sid)


def test_back_after_the_turn_ended_reads_the_stored_answer(chat_stack: ChatStack):
    """The client is away until the turn is over. User sees: resume answers 204 (nothing live), and the messages
    API holds the whole answer, which is what the page shows after a reload; sending the same message id again
    replays that turn and starts no second one. Stored: each message once."""
    chat_stack.llm.token_delay = 0.005
    sid = "resume-faults-session-0002"
    with chat_stack.client() as client:
        with client.stream("POST", "/chat", json=ui_body(sid, f"[[long:{WORDS}]]", "m-away-1")) as response:
            assert response.status_code == 200
            _read(response, 4)
        deadline = time.monotonic() + 20
        while turn_running(chat_stack, sid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.get(f"/chat/{sid}/stream").status_code == 204
        messages = client.get(f"/sessions/{sid}/messages").json()["messages"]
        assert [m["role"] for m in messages] == ["user", "assistant"]
        assert len(messages[1]["content"].split()) == WORDS and messages[1]["status"] == "complete"
        again = client.post("/chat", json=ui_body(sid, f"[[long:{WORDS}]]", "m-away-1"))
        assert again.status_code == 200  # the replay of the turn that message started, not a new one
        replay = parse_sse(again.text)
        assert replay.done and replay.text() == messages[1]["content"]
    assert [m["role"] for m in stored(chat_stack, sid)] == ["user", "assistant"]
