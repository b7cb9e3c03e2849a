"""Redis paused (SIGSTOP), restarted and killed in the middle of a streaming turn. Redis is a cache and the replay
log: the turn streams on and is stored whole in DynamoDB; what Redis lost only costs resume (204, with the reason)
until it is back, and the session stays usable."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
import redis

from chatcore.replay import active_key
from tests.conftest import ChatStack, start_chat_stack, stop_chat_stack
from tests.faults.support import lease_held, new_session, post_turn, roles_and_text, stored
from tests.support.redis_server import RedisServer
from tests.support.sse import ParsedStream, parse_sse

WORDS = 120
RETRY_AFTER = 1.0  # REDIS_RETRY_AFTER_SECONDS: how long the cache is skipped after a failure


def _wait_for_replay_log(server: RedisServer, session_id: str, timeout: float = 10.0) -> None:
    """Until the session's active-turn pointer is in Redis: its turn has begun its replay log."""
    client = redis.Redis.from_url(server.url)
    try:
        deadline = time.monotonic() + timeout
        while client.get(active_key(session_id)) is None:
            if time.monotonic() > deadline:
                raise AssertionError("the turn never began its replay log")
            time.sleep(0.02)
    finally:
        client.close()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def chat(table_name: str, own_redis: RedisServer) -> Iterator[ChatStack]:
    stack = start_chat_stack(table_name, own_redis.url, redis_retry_after_seconds=RETRY_AFTER)
    stack.llm.token_delay = 0.01
    yield stack
    stop_chat_stack(stack)


def _turn_with_fault(chat: ChatStack, sid: str, fault: Callable[[], None], *, after_events: int = 10) -> ParsedStream:
    """Stream a long turn; call ``fault`` once ``after_events`` SSE events arrived; read the stream to its end."""
    body = ""
    with (
        chat.client() as client,
        client.stream("POST", f"/sessions/{sid}/stream", json={"message": f"[[long:{WORDS}]]"}) as response,
    ):
        assert response.status_code == 200
        faulted = False
        for piece in response.iter_text():
            body += piece
            if not faulted and body.count("\n\n") >= after_events:
                fault()
                faulted = True
        assert faulted
    return parse_sse(body)


def _stored_whole(chat: ChatStack, sid: str, stream: ParsedStream) -> None:
    assert stream.done and not stream.of_type("error") and len(stream.text().split()) == WORDS
    assert roles_and_text(stored(chat, sid)) == [
        ("user", f"[[long:{WORDS}]]", "complete"),
        ("assistant", stream.text(), "complete"),
    ]
    assert not lease_held(chat, sid)


def _next_turn_works(chat: ChatStack, client: httpx.Client, sid: str) -> None:
    response, follow = post_turn(client, sid, "still there?")
    assert response.status_code == 200 and follow is not None
    assert follow.done and not follow.of_type("error")
    assert [m["content"] for m in stored(chat, sid)][-2:] == ["still there?", follow.text()]
    assert not lease_held(chat, sid)


def test_redis_paused_mid_turn(chat: ChatStack, own_redis: RedisServer):
    """User sees: the whole answer, no error (each Redis call gives up after REDIS_TIMEOUT_SECONDS and the cache
    is skipped). Stored: the user message and the whole answer. A resume while Redis is frozen answers 204 at once
    with the reason; after Redis is back, the next turn works."""
    with chat.client() as client:
        sid = new_session(client)
        try:
            stream = _turn_with_fault(chat, sid, own_redis.pause)
            _stored_whole(chat, sid, stream)
            resume = client.get(f"/chat/{sid}/stream", timeout=10)
            assert resume.status_code == 204 and resume.headers["x-resume-unavailable"]
        finally:
            own_redis.resume()
        time.sleep(RETRY_AFTER)
        _next_turn_works(chat, client, sid)


def test_redis_restarted_mid_turn(chat: ChatStack, own_redis: RedisServer):
    """Redis comes back empty in the middle of the turn. User sees: the whole answer, no error. Stored: both
    messages. Afterwards the next turn works (its cache entries are written anew)."""
    with chat.client() as client:
        sid = new_session(client)
        stream = _turn_with_fault(chat, sid, own_redis.restart)
        _stored_whole(chat, sid, stream)
        time.sleep(RETRY_AFTER)
        _next_turn_works(chat, client, sid)
        assert client.get(f"/chat/{sid}/stream").status_code == 204  # nothing running: nothing to resume


def test_redis_killed_mid_turn(chat: ChatStack, own_redis: RedisServer):
    """User sees: the whole answer, no error; a resume answers 204 naming the reason. Stored: both messages; the
    next turn works without Redis."""
    with chat.client() as client:
        sid = new_session(client)
        stream = _turn_with_fault(chat, sid, own_redis.kill)
        _stored_whole(chat, sid, stream)
        resume = client.get(f"/chat/{sid}/stream")
        assert resume.status_code == 204 and resume.headers["x-resume-unavailable"]
        _next_turn_works(chat, client, sid)


def test_a_resuming_client_when_redis_freezes(chat: ChatStack, own_redis: RedisServer):
    """A second tab follows the turn from the replay log when Redis freezes. The tab that sent the message sees
    the whole answer; the resuming one ends (it does not hang past the turn) and DynamoDB holds the answer, which
    it reads back. Stored: both messages."""
    with chat.client() as client:
        sid = new_session(client)
        sent: dict[str, ParsedStream] = {}
        sender = threading.Thread(
            target=lambda: sent.update(stream=_turn_with_fault(chat, sid, lambda: None, after_events=1)), daemon=True
        )
        sender.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # until the turn is live in the log
            with client.stream("GET", f"/chat/{sid}/stream") as live:
                if live.status_code == 200:
                    break
            time.sleep(0.05)
        resumed = ""
        try:
            with client.stream("GET", f"/chat/{sid}/stream", timeout=30) as live:
                assert live.status_code == 200
                for piece in live.iter_text():
                    resumed += piece
                    if resumed.count("\n\n") == 5:
                        own_redis.pause()
        finally:
            own_redis.resume()
        sender.join(timeout=30)
        _stored_whole(chat, sid, sent["stream"])
        partial = parse_sse(resumed)
        assert sent["stream"].text().startswith(partial.text())


def test_a_resume_after_a_redis_blip_does_not_replay_a_gap(chat: ChatStack, own_redis: RedisServer):
    """Redis freezes for a moment in the middle of a long turn, then is back while the turn still streams. The
    chunks published meanwhile never reached the replay log. A client that resumes the turn after that used to get
    the answer with a hole in it and a normal ``finish``. User sees (resuming): the answer up to the hole, then an
    error chunk saying the live stream was interrupted and the answer is saved. The sender sees the whole answer.
    Stored: the whole answer."""
    chat.llm.token_delay = 0.01
    words = 400

    def blip() -> None:
        own_redis.pause()
        time.sleep(0.8)
        own_redis.resume()

    with chat.client() as client:
        sid = new_session(client)
        sent: dict[str, str] = {}

        def send() -> None:
            with chat.client() as sender:
                sent["body"] = sender.post(f"/sessions/{sid}/stream", json={"message": f"[[long:{words}]]"}).text

        thread = threading.Thread(target=send, daemon=True)
        thread.start()
        _wait_for_replay_log(own_redis, sid)  # the blip must come after the turn's log began (a busy CI was late)
        time.sleep(0.3)
        blip()
        time.sleep(RETRY_AFTER + 0.3)  # the circuit is closed again; the turn is still streaming
        resumed = parse_sse(client.get(f"/chat/{sid}/stream", timeout=30).text)
        thread.join(timeout=30)
        whole = parse_sse(sent["body"])
        assert whole.done and len(whole.text().split()) == words
        assert stored(chat, sid)[-1]["content"] == whole.text()
        claims_complete = resumed.done and bool(resumed.of_type("finish")) and not resumed.of_type("error")
        assert not claims_complete or resumed.text() == whole.text()
        if not claims_complete:
            assert whole.text().startswith(resumed.text()) and "reload" in resumed.of_type("error")[0]["errorText"]
