"""DynamoDB throttling and conditional-check conflicts, injected at the botocore layer of the server's real client
(``tests/faults/support.DynamoFaults``): what the user sees and what DynamoDB holds afterwards.

A turn writes with ``TransactWriteItems`` (the user message, then the answer with the lease given back) and
``UpdateItem`` (the lease); a listing reads with ``Query``. botocore (standard mode, 5 attempts) retries throttling
codes, and a request whose answer was lost (a read timeout), which DynamoDB may have applied: each
``TransactWriteItems`` carries a ``ClientRequestToken`` (one per call, which botocore's retries resend), so DynamoDB
applies it once. The append code retries a cancelled transaction whose reasons are a lost race, and a turn retries
the write that ends it (its answer) while it is throttled, within ``ANSWER_WRITE_RETRY_SECONDS``."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import ChatStack, start_chat_stack, stop_chat_stack
from tests.faults.support import (
    attempts,
    dynamo_faults,
    lease_held,
    lost_transaction_responses,
    new_session,
    post_turn,
    roles_and_text,
    stored,
)

THROTTLES = ["ProvisionedThroughputExceededException", "ThrottlingException"]


def _answered_once(chat: ChatStack, sid: str, text: str, answer: str) -> None:
    assert roles_and_text(stored(chat, sid)) == [("user", text, "complete"), ("assistant", answer, "complete")]
    assert not lease_held(chat, sid)


@pytest.mark.parametrize("code", THROTTLES)
def test_throttled_writes_within_the_retry_budget_are_invisible(chat_stack: ChatStack, code: str):
    """User sees: the normal answer. Stored: the user message and the answer, once each."""
    faults = dynamo_faults(chat_stack)
    with chat_stack.client() as client, faults.installed():
        sid = new_session(client)
        faults.fail("TransactWriteItems", code, times=2)  # the user message's write: two throttles, then through
        faults.fail("UpdateItem", code, times=2)  # and the lease
        response, stream = post_turn(client, sid, "hello under throttling")
        assert response.status_code == 200 and stream is not None
        assert stream.done and not stream.of_type("error") and stream.text()
        assert faults.injected["TransactWriteItems"] == 2 and faults.injected["UpdateItem"] == 2
    _answered_once(chat_stack, sid, "hello under throttling", stream.text())


def test_throttling_beyond_the_retries_refuses_the_turn_before_any_byte(chat_stack: ChatStack):
    """User sees: a 503 JSON error, no stream (nothing acknowledged). Stored: nothing of the turn; the lease is
    given back, so the same message sent again is answered."""
    faults = dynamo_faults(chat_stack)
    with chat_stack.client() as client, faults.installed():
        sid = new_session(client)
        faults.fail(
            "TransactWriteItems", "ProvisionedThroughputExceededException", times=attempts(chat_stack)
        )  # every attempt
        response, _ = post_turn(client, sid, "will this be stored?")
        assert response.status_code == 503, response.text
        assert response.headers["content-type"].startswith("application/json")
        assert response.json()["error"]["code"] and "Traceback" not in response.text
        assert faults.pending("TransactWriteItems") == 0
        assert stored(chat_stack, sid) == [] and not lease_held(chat_stack, sid)
        again, stream = post_turn(client, sid, "will this be stored?")
        assert again.status_code == 200 and stream is not None and stream.done
    _answered_once(chat_stack, sid, "will this be stored?", stream.text())


def test_an_answer_write_throttled_past_botocores_retries_is_retried_and_stored_once(chat_stack: ChatStack):
    """Every attempt botocore makes of the answer's write is throttled; the turn writes it again after a backoff
    (``ANSWER_WRITE_RETRY_SECONDS``: what the user saw streamed is stored). User sees: the normal answer. Stored:
    each message once; the lease given back."""
    faults = dynamo_faults(chat_stack)
    with chat_stack.client() as client, faults.installed():
        sid = new_session(client)
        # The user message's write goes through; then every attempt of the answer's first write is throttled.
        faults.fail("TransactWriteItems", "ThrottlingException", times=attempts(chat_stack), after=1)
        response, stream = post_turn(client, sid, "an answer worth waiting for")
        assert response.status_code == 200 and stream is not None and stream.done
        assert not stream.of_type("error") and stream.types[-1] == "finish"
        assert faults.pending("TransactWriteItems") == 0
    _answered_once(chat_stack, sid, "an answer worth waiting for", stream.text())


def test_an_answer_write_throttled_past_its_budget_ends_with_an_error_and_keeps_the_user_message(
    table_name: str, redis_url: str
):
    """The answer's write is still throttled when its retry budget is spent. User sees: the streamed text, then an
    error chunk and ``finish`` (the answer was not stored, and says so). Stored: the user message only; the lease
    is given back and the next turn works."""
    chat = start_chat_stack(table_name, redis_url, answer_write_retry_seconds=0.1)  # no time for a second write
    try:
        faults = dynamo_faults(chat)
        with chat.client() as client, faults.installed():
            sid = new_session(client)
            faults.fail("TransactWriteItems", "ThrottlingException", times=attempts(chat), after=1)
            response, stream = post_turn(client, sid, "an answer that cannot be saved")
            assert response.status_code == 200 and stream is not None
            assert stream.text() and stream.of_type("error") and stream.types[-1] == "finish" and stream.done
            assert roles_and_text(stored(chat, sid)) == [("user", "an answer that cannot be saved", "complete")]
            assert not lease_held(chat, sid)
            _, follow = post_turn(client, sid, "and now?")
            assert follow is not None and follow.done and not follow.of_type("error")
            assert [m["content"] for m in stored(chat, sid)] == [
                "an answer that cannot be saved",
                "and now?",
                follow.text(),
            ]
    finally:
        stop_chat_stack(chat)


@pytest.mark.parametrize("reason", ["ConditionalCheckFailed", "TransactionConflict"])
def test_a_lost_race_on_the_write_is_retried_and_stores_once(chat_stack: ChatStack, reason: str):
    """The user message's transaction is cancelled as if another writer got in first (META's condition failed, or
    a conflicting transaction). The append reloads META and writes again. User sees: the normal answer. Stored:
    each message once, seqs dense."""
    faults = dynamo_faults(chat_stack)
    with chat_stack.client() as client, faults.installed():
        sid = new_session(client)
        faults.fail("TransactWriteItems", "TransactionCanceledException", times=3, reason=reason)
        response, stream = post_turn(client, sid, "race me")
        assert response.status_code == 200 and stream is not None and stream.done
        assert not stream.of_type("error")
        assert faults.injected["TransactWriteItems"] == 3
    _answered_once(chat_stack, sid, "race me", stream.text())
    assert [m["seq"] for m in stored(chat_stack, sid)] == [1, 2]


def test_a_throttled_transaction_is_retried(chat_stack: ChatStack):
    """DynamoDB reports a throttled transaction as ``TransactionCanceledException`` with the reason
    ``ThrottlingError`` (not a code botocore retries). User sees: the normal answer. Stored: once each."""
    faults = dynamo_faults(chat_stack)
    with chat_stack.client() as client, faults.installed():
        sid = new_session(client)
        faults.fail("TransactWriteItems", "TransactionCanceledException", times=2, reason="ThrottlingError")
        response, stream = post_turn(client, sid, "throttled transaction")
        assert response.status_code == 200, response.text
        assert stream is not None and stream.done and not stream.of_type("error")
    _answered_once(chat_stack, sid, "throttled transaction", stream.text())


def test_a_conflict_that_never_clears_is_a_409_and_writes_nothing(chat_stack: ChatStack):
    """Every attempt of the user message's write loses its race (bounded: 40 attempts with jittered backoff).
    User sees: 409 JSON before any stream. Stored: nothing of the turn, lease given back."""
    faults = dynamo_faults(chat_stack)
    with chat_stack.client() as client, faults.installed():
        sid = new_session(client)
        faults.fail("TransactWriteItems", "TransactionCanceledException", times=40, reason="TransactionConflict")
        response, _ = post_turn(client, sid, "never lands")
        assert response.status_code == 409, response.text
        assert response.json()["error"]["code"]
        assert stored(chat_stack, sid) == [] and not lease_held(chat_stack, sid)


def test_throttled_reads_are_a_503_and_write_nothing(chat_stack: ChatStack):
    """The session listing's ``Query`` throttled past the retries. User sees: 503 JSON. Then it reads again."""
    faults = dynamo_faults(chat_stack)
    with chat_stack.client() as client, faults.installed():
        new_session(client)
        faults.fail("Query", "ProvisionedThroughputExceededException", times=attempts(chat_stack))
        listing = client.get("/sessions")
        assert listing.status_code == 503 and listing.json()["error"]["code"]
        assert len(client.get("/sessions").json()["sessions"]) == 1


WRITES = {"the user message": 0, "the answer": 1}  # a turn's TransactWriteItems, in the order it sends them


@pytest.mark.parametrize("write", WRITES)
def test_a_transaction_applied_whose_answer_was_lost_completes_once(chat_stack: ChatStack, write: str):
    """DynamoDB applies the write, its answer is lost (read timeout), botocore sends it again with the same client
    token, and DynamoDB answers the resend as a success without applying it again (emulated: moto ignores the
    token). User sees: the normal answer, no error. Stored: the user message and the answer, once each."""
    lost = lost_transaction_responses(chat_stack, lose=WRITES[write])
    with chat_stack.client() as client:
        sid = new_session(client)
        with lost.installed():
            response, stream = post_turn(client, sid, "was it stored?")
        assert response.status_code == 200, response.text
        assert stream is not None and stream.done and stream.types[-1] == "finish"
        assert not stream.of_type("error") and stream.text()
    assert lost.replayed == 1  # the resend was answered by its token, not applied again
    resent = lost.tokens[WRITES[write]]
    assert resent is not None and lost.tokens[WRITES[write] + 1] == resent
    _answered_once(chat_stack, sid, "was it stored?", stream.text())
    assert [m["seq"] for m in stored(chat_stack, sid)] == [1, 2]


@pytest.mark.parametrize("write", WRITES)
def test_without_a_client_token_the_resend_of_an_applied_write_goes_wrong(chat_stack: ChatStack, write: str):
    """The scenario above when the requests carry no token (what moto does with them): the resend of the applied
    write is a new request. The user message's resend finds META's version moved, so the append reloads it and
    stores the message a second time; the answer's resend finds the lease given back, and the user sees an error
    chunk for an answer that DynamoDB holds. This is what the token prevents, and shows the test above can fail."""
    lost = lost_transaction_responses(chat_stack, lose=WRITES[write], send_tokens=False)
    with chat_stack.client() as client:
        sid = new_session(client)
        with lost.installed():
            response, stream = post_turn(client, sid, "was it stored?")
        assert response.status_code == 200 and stream is not None and stream.done
    assert lost.replayed == 0
    user, answer = ("user", "was it stored?", "complete"), ("assistant", stream.text(), "complete")
    if write == "the user message":
        assert not stream.of_type("error")
        assert roles_and_text(stored(chat_stack, sid)) == [user, user, answer]
    else:
        assert stream.of_type("error")
        assert roles_and_text(stored(chat_stack, sid)) == [user, answer]


def test_each_transaction_carries_its_own_client_token(chat_stack: ChatStack):
    """Every ``TransactWriteItems`` the server sends carries a ``ClientRequestToken``, and two calls (two different
    writes) carry different ones: a token reused for different items would be refused by DynamoDB
    (``IdempotentParameterMismatchException``), or answered without applying them."""
    lost = lost_transaction_responses(chat_stack, lose=-1)  # nothing lost: every request reaches moto
    with chat_stack.client() as client:
        sid = new_session(client)
        with lost.installed():
            for text in ("first", "second"):
                _, stream = post_turn(client, sid, text)
                assert stream is not None and stream.done and not stream.of_type("error")
    assert len(lost.tokens) == 4  # two turns: the user message, then the answer
    assert all(lost.tokens) and len(set(lost.tokens)) == 4


def test_a_retry_by_botocore_resends_the_token_and_a_retry_after_a_lost_race_makes_a_new_one(chat_stack: ChatStack):
    """The user message's write throttled once (botocore sends the same request again: the same token, so DynamoDB
    would not apply it twice), then cancelled as a lost race (the append builds new items, for META's new version:
    a new call, a new token; the old token with these items would be refused as a mismatch)."""
    faults = dynamo_faults(chat_stack)
    tokens: list[str | None] = []

    def record(request: Any, **_: Any) -> None:
        tokens.append(json.loads(request.body or b"{}").get("ClientRequestToken"))

    assert chat_stack.stack.container is not None
    events = chat_stack.stack.container.aws.dynamodb().meta.events
    with chat_stack.client() as client:
        sid = new_session(client)
        events.register("before-send.dynamodb.TransactWriteItems", record, unique_id="token-recorder")
        try:
            with faults.installed():
                faults.fail("TransactWriteItems", "ThrottlingException", times=1)
                faults.fail("TransactWriteItems", "TransactionCanceledException", times=1, reason="TransactionConflict")
                _, stream = post_turn(client, sid, "tokens")
        finally:
            events.unregister("before-send.dynamodb.TransactWriteItems", unique_id="token-recorder")
        assert stream is not None and stream.done and not stream.of_type("error")
    throttled, cancelled, written, answer = tokens
    assert throttled is not None and throttled == cancelled  # one call, retried by botocore
    assert written not in (None, cancelled) and answer not in (None, written)
    _answered_once(chat_stack, sid, "tokens", stream.text())
