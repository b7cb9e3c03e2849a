"""Resume and stop: a client that went away replays the whole turn and follows it live; a stop keeps the partial."""

from __future__ import annotations

import threading
import time

import httpx

from tests.conftest import ChatStack
from tests.integration.test_chat_turns import history
from tests.support.sse import parse_sse


def _start_and_cut(chat: ChatStack, sid: str, text: str, keep: int) -> str:
    """POST a turn, read ``keep`` SSE events, then drop the connection (a page reload)."""
    received = ""
    with chat.client() as client, client.stream("POST", f"/sessions/{sid}/stream", json={"message": text}) as response:
        assert response.status_code == 200
        for chunk in response.iter_text():
            received += chunk
            if received.count("\n\n") >= keep:
                break
    return received


def test_resume_after_cut_replays_the_whole_turn_then_follows_it(chat_stack: ChatStack):
    chat_stack.llm.token_delay = 0.01
    with chat_stack.client() as client:
        sid = client.post("/sessions", json={"title": "t"}).json()["id"]
        partial = parse_sse(_start_and_cut(chat_stack, sid, "[[long:150]]", keep=10))
        assert not partial.done
        resumed = client.get(f"/chat/{sid}/stream")
        assert resumed.status_code == 200
        stream = parse_sse(resumed.text)
        assert stream.done and stream.types[0] == "start" and stream.types[-1] == "finish"
        assert stream.chunks[: len(partial.chunks)] == partial.chunks  # a full replay from the first chunk
        assert all(stream.ids) and len(set(stream.ids)) == len(stream.ids)
        messages = history(chat_stack, client, sid)
        assert messages[-1]["content"] == stream.text() and len(stream.text().split()) == 150
        # The turn is over: nothing to resume.
        assert client.get(f"/chat/{sid}/stream").status_code == 204


def test_last_event_id_continues_after_that_entry(chat_stack: ChatStack):
    chat_stack.llm.token_delay = 0.02
    with chat_stack.client() as client:
        sid = client.post("/sessions", json={"title": "t"}).json()["id"]
        _start_and_cut(chat_stack, sid, "[[long:80]]", keep=6)
        first = client.get(f"/chat/{sid}/stream", headers={"last-event-id": "0-0"})
        full = parse_sse(first.text)
        assert full.done
    # While a turn is active, a Last-Event-ID resume skips what the client already has.
    with chat_stack.client() as client:
        sid2 = client.post("/sessions", json={"title": "t"}).json()["id"]
        _start_and_cut(chat_stack, sid2, "[[long:120]]", keep=6)
        head = []
        with client.stream("GET", f"/chat/{sid2}/stream") as response:
            buffer = ""
            for chunk in response.iter_text():
                buffer += chunk
                if buffer.count("\n\n") >= 8:
                    break
            head = parse_sse(buffer.rsplit("\n\n", 1)[0] + "\n\n").ids
        last_seen = head[-1]
        assert last_seen is not None
        rest = parse_sse(client.get(f"/chat/{sid2}/stream", headers={"last-event-id": last_seen}).text)
        assert rest.done and rest.ids[0] != last_seen
        assert rest.types[0] != "start"
        combined_text = (
            "".join(
                c["delta"] for c in parse_sse(buffer.rsplit("\n\n", 1)[0] + "\n\n").chunks if c["type"] == "text-delta"
            )
            + rest.text()
        )
        assert history(chat_stack, client, sid2)[-1]["content"] == combined_text


def test_client_going_away_does_not_stop_the_turn(chat_stack: ChatStack):
    chat_stack.llm.token_delay = 0.01
    with chat_stack.client() as client:
        sid = client.post("/sessions", json={"title": "t"}).json()["id"]
        _start_and_cut(chat_stack, sid, "[[long:100]]", keep=4)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            messages = history(chat_stack, client, sid)
            if len(messages) == 2:
                break
            time.sleep(0.1)
        assert len(messages[-1]["content"].split()) == 100 and messages[-1]["status"] == "complete"


def test_stop_persists_the_partial_answer(chat_stack: ChatStack):
    chat_stack.llm.token_delay = 0.02
    with chat_stack.client() as client:
        sid = client.post("/sessions", json={"title": "t"}).json()["id"]
        result: dict = {}

        def run() -> None:
            with chat_stack.client() as c:
                result["body"] = c.post(f"/sessions/{sid}/stream", json={"message": "[[long:400]]"}).text

        thread = threading.Thread(target=run)
        thread.start()
        time.sleep(1.0)
        stopped = client.post(f"/chat/{sid}/stop")
        assert stopped.status_code == 202 and stopped.json()["status"] == "stopping"
        thread.join(timeout=30)
        stream = parse_sse(result["body"])
        assert stream.done and stream.types[-1] == "finish" and not stream.of_type("error")
        words = len(stream.text().split())
        assert 0 < words < 400
        messages = history(chat_stack, client, sid)
        assert messages[-1]["status"] == "partial" and messages[-1]["content"] == stream.text()
        assert client.post(f"/chat/{sid}/stop").status_code == 204  # nothing running any more
        follow = parse_sse(client.post(f"/sessions/{sid}/stream", json={"message": "next"}).text)
        assert follow.done and not follow.of_type("error")


def test_resume_and_stop_are_404_for_another_user(chat_stack: ChatStack):
    with chat_stack.client() as client:
        sid = client.post("/sessions", json={"title": "t"}).json()["id"]
    with chat_stack.client("mallory") as other:
        assert other.get(f"/chat/{sid}/stream").status_code == 404
        assert other.post(f"/chat/{sid}/stop").status_code == 404
        assert other.post(f"/sessions/{sid}/stream", json={"message": "x"}).status_code == 404


def test_nothing_to_resume_is_204(chat_stack: ChatStack):
    with chat_stack.client() as client:
        sid = client.post("/sessions", json={"title": "t"}).json()["id"]
        response = client.get(f"/chat/{sid}/stream")
        assert response.status_code == 204 and response.content == b""
        assert isinstance(response, httpx.Response)


def test_anonymous_caller_reaches_no_owned_session_on_any_chat_route(table_name: str, redis_url: str):
    """S1: with ALLOW_ANONYMOUS on, a caller without a token reaches owner-less sessions only (404 otherwise),
    while alice's turn is live (resume would otherwise replay it, stop would stop it)."""
    from tests.conftest import start_chat_stack, stop_chat_stack

    chat = start_chat_stack(table_name, redis_url, allow_anonymous=True)
    chat.llm.token_delay = 0.03
    try:
        with chat.client() as alice:
            sid = alice.post("/sessions", json={"title": "private"}).json()["id"]
            result: dict[str, str] = {}

            def run() -> None:
                with chat.client() as c:
                    result["body"] = c.post(f"/sessions/{sid}/stream", json={"message": "[[long:60]]"}).text

            thread = threading.Thread(target=run)
            thread.start()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # until alice's turn is live (her own resume answers 200)
                with alice.stream("GET", f"/chat/{sid}/stream") as live:
                    if live.status_code == 200:
                        break
                time.sleep(0.05)
            with httpx.Client(base_url=chat.url, timeout=10) as anonymous:
                replay = anonymous.get(f"/chat/{sid}/stream")
                assert replay.status_code == 404, replay.text[:200]
                assert replay.json()["error"]["code"] == "not_found"
                assert anonymous.post(f"/chat/{sid}/stop").status_code == 404
                assert anonymous.post(f"/sessions/{sid}/stream", json={"message": "x"}).status_code == 404
                body = {
                    "id": sid,
                    "messages": [{"id": "m-anon-1", "role": "user", "parts": [{"type": "text", "text": "x"}]}],
                }
                assert anonymous.post("/chat", json=body).status_code == 404
            thread.join(timeout=30)
            stream = parse_sse(result["body"])
            assert stream.done and not stream.of_type("error")
            assert len(stream.text().split()) == 60  # the anonymous stop did not cut it short
            messages = history(chat, alice, sid)
            assert [m["role"] for m in messages] == ["user", "assistant"]
            assert messages[-1]["status"] == "complete"
    finally:
        stop_chat_stack(chat)


def test_resume_after_the_end_of_a_finished_log_ends_at_once_on_redis(settings):
    """Issue 12 item 4 on a real redis-server: a cursor at the last entry of a finished log gets the end, not pings."""
    import asyncio

    from chatcore.container import Container
    from chatcore.stream import DEFAULT_LEVEL
    from chatcore.streams import Chunk, End, follow_log

    async def run() -> list:
        container = Container(settings)
        replay = container.replay
        try:
            await replay.begin("s-end", "t-end", None)
            await replay.append("t-end", ['{"type":"start"}', '{"type":"finish"}'])
            await replay.end("s-end", "t-end")
            whole = [
                f
                async for f in follow_log(replay, "t-end", level=DEFAULT_LEVEL, heartbeat_seconds=0.05, idle_seconds=5)
            ]
            last = [f for f in whole if isinstance(f, Chunk)][-1].event_id
            assert last is not None and isinstance(whole[-1], End)
            beyond = str(int(last.split("-")[0]) + 60_000) + "-0"  # a Last-Event-ID past the end entry too
            return [
                f
                async for f in follow_log(
                    replay, "t-end", beyond, level=DEFAULT_LEVEL, heartbeat_seconds=0.05, idle_seconds=5
                )
            ]
        finally:
            await container.aclose()

    frames = asyncio.run(run())
    assert len(frames) == 1 and isinstance(frames[0], End)  # no heartbeats first: it ended at once
