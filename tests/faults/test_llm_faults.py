"""An LLM 429 storm over concurrent turns: what every user sees, what is stored, and that retries stay bounded.
(One turn's 429s/500s within the retry budget, a persistent 500, a mid-stream error, a hang and a silent model are
in tests/integration/test_chat_faults.py.)"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from tests.conftest import ChatStack
from tests.faults.support import lease_held, new_session, post_turn, roles_and_text, stored

SESSIONS = 6


def test_a_429_storm_over_concurrent_turns(chat_stack: ChatStack):
    """Every request of every turn gets 429 (``LLM_MAX_RETRIES=2``: three attempts each). User sees: the stream
    opens (the message is acknowledged), then an error chunk with a plain message and ``finish``; nothing about
    429. Stored: each user message once, no assistant message; every lease given back. The model was asked exactly
    three times per turn (no retry storm on top of the 429 storm). When the storm is over, every session answers."""
    attempts = 1 + chat_stack.settings.llm_max_retries
    with chat_stack.client() as client:
        sids = [new_session(client) for _ in range(SESSIONS)]
        chat_stack.llm.faults.push("429", times=SESSIONS * attempts)
        with ThreadPoolExecutor(SESSIONS) as pool:
            results = list(pool.map(lambda i: post_turn(client, sids[i], f"storm message {i}"), range(SESSIONS)))
        assert len(chat_stack.llm.faults) == 0
        for i, (response, stream) in enumerate(results):
            assert response.status_code == 200 and stream is not None
            assert stream.types[0] == "start" and stream.types[-1] == "finish" and stream.done
            errors = stream.of_type("error")
            assert len(errors) == 1 and "429" not in errors[0]["errorText"] and not stream.text()
            assert roles_and_text(stored(chat_stack, sids[i])) == [("user", f"storm message {i}", "complete")]
            assert not lease_held(chat_stack, sids[i])
            asked = [r for r in chat_stack.llm.requests if f"storm message {i}" in str(r["messages"][-1]["content"])]
            assert len(asked) == attempts

        for i, sid in enumerate(sids):
            response, stream = post_turn(client, sid, f"after the storm {i}")
            assert response.status_code == 200 and stream is not None and stream.done
            assert not stream.of_type("error") and stream.text()
            assert roles_and_text(stored(chat_stack, sid)) == [
                ("user", f"storm message {i}", "complete"),
                ("user", f"after the storm {i}", "complete"),
                ("assistant", stream.text(), "complete"),
            ]
