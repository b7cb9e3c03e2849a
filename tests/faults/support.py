"""Helpers of the fault suite: faults injected into the server's own DynamoDB client, and what DynamoDB holds."""

from __future__ import annotations

import json
import threading
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import httpx
import redis
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ReadTimeoutError

from chatcore.replay import active_key
from tests.conftest import ChatStack
from tests.support.sse import ParsedStream, parse_sse


class _Body:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._data


class DynamoFaults:
    """Error answers for the next requests of one DynamoDB operation, given by a ``before-send`` handler on the
    server's real botocore client instead of sending them: botocore parses them and applies its retry policy
    exactly as for an answer of DynamoDB. ``sent`` counts every attempt of each operation, answered or failed."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._planned: dict[str, deque[tuple[str, tuple[str, ...]] | None]] = {}
        self.sent: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()

    def fail(self, operation: str, code: str, *, times: int, reason: str = "", after: int = 0) -> None:
        """``times`` answers of ``code`` once ``after`` more requests went through; with ``reason``, a
        ``TransactionCanceledException`` whose first item (META) failed for ``reason`` and the others were not
        evaluated (``None``), as DynamoDB reports it."""
        fault = (code, (reason,) if reason else ())
        with self._lock:
            self._planned.setdefault(operation, deque()).extend([None] * after + [fault] * times)

    def clear(self) -> None:
        with self._lock:
            self._planned.clear()

    def pending(self, operation: str) -> int:
        with self._lock:
            return len(self._planned.get(operation, ()))

    def _on_send(self, request: Any, event_name: str, **_: Any) -> AWSResponse | None:
        operation = event_name.rsplit(".", 1)[-1]
        with self._lock:
            self.sent[operation] += 1
            planned = self._planned.get(operation)
            if not planned:
                return None
            planned_fault = planned.popleft()
            if planned_fault is None:
                return None
            code, reasons = planned_fault
            self.injected[operation] += 1
        body: dict[str, Any] = {"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": f"injected {code}"}
        if reasons:
            items = len(json.loads(request.body or b"{}").get("TransactItems", [])) or 1
            codes = [*reasons, *["None"] * (items - len(reasons))]
            body["CancellationReasons"] = [{"Code": c, "Message": c} for c in codes]
            body["message"] = f"Transaction cancelled [{', '.join(codes)}]"
        headers = {"content-type": "application/x-amz-json-1.0", "x-amzn-requestid": "injected"}
        return AWSResponse(request.url, 400, headers, _Body(json.dumps(body).encode()))

    @contextmanager
    def installed(self) -> Iterator[DynamoFaults]:
        self._client.meta.events.register("before-send.dynamodb", self._on_send, unique_id="fault-suite")
        try:
            yield self
        finally:
            self._client.meta.events.unregister("before-send.dynamodb", unique_id="fault-suite")


class LostTransactionResponses:
    """DynamoDB applies a ``TransactWriteItems`` and its answer is lost: a ``before-send`` handler on the server's
    real botocore client sends the chosen request to moto itself (so it is applied), then makes botocore see a read
    timeout (so botocore retries it, with the same parameters).

    It also answers as DynamoDB does where moto does not: moto ignores ``ClientRequestToken``, while DynamoDB's API
    reference says that if you submit a request with the same client token within 10 minutes of the first, the
    request is idempotent (it succeeds without applying again). So a request whose token was already applied is
    answered with DynamoDB's success answer (``{}``) instead of being sent to moto. ``send_tokens=False`` sends
    every request without its token, as if the client gave none: the retry then reaches moto's conditions.
    ``tokens`` holds the token of every attempt, in order (None for none)."""

    def __init__(self, client: Any, *, lose: int, send_tokens: bool = True) -> None:
        self._client = client
        self._lose = lose  # the index of the attempt whose answer is lost (0 = the first one sent)
        self._send_tokens = send_tokens
        self._lock = threading.Lock()
        self._applied: set[str] = set()
        self.tokens: list[str | None] = []
        self.replayed = 0

    def _on_send(self, request: Any, **_: Any) -> AWSResponse | None:
        body = json.loads(request.body or b"{}")
        token: str | None = body.get("ClientRequestToken")
        with self._lock:
            attempt = len(self.tokens)
            self.tokens.append(token)
            if token is not None and token in self._applied:
                self.replayed += 1
                headers = {"content-type": "application/x-amz-json-1.0", "x-amzn-requestid": "idempotent"}
                return AWSResponse(request.url, 200, headers, _Body(b"{}"))
        if not self._send_tokens:
            body.pop("ClientRequestToken", None)
        answer = self._forward(request, json.dumps(body).encode())
        if attempt != self._lose:
            return answer
        assert answer.status_code == 200, answer.content  # applied, and only its answer is lost
        if token is not None and self._send_tokens:
            with self._lock:
                self._applied.add(token)
        raise ReadTimeoutError(endpoint_url=request.url)

    @staticmethod
    def _forward(request: Any, body: bytes) -> AWSResponse:
        skip = {"content-length", "transfer-encoding"}
        headers = {k: v for k, v in request.headers.items() if k.lower() not in skip}
        sent = httpx.post(request.url, content=body, headers=headers, timeout=30)
        kept = {k: v for k, v in sent.headers.items() if k.lower() not in {"content-encoding", *skip}}
        return AWSResponse(request.url, sent.status_code, kept, _Body(sent.content))

    @contextmanager
    def installed(self) -> Iterator[LostTransactionResponses]:
        event = "before-send.dynamodb.TransactWriteItems"
        self._client.meta.events.register(event, self._on_send, unique_id="lost-responses")
        try:
            yield self
        finally:
            self._client.meta.events.unregister(event, unique_id="lost-responses")


def attempts(chat: ChatStack) -> int:
    """How many times botocore sends one call of the server's DynamoDB client (the first and its retries)."""
    assert chat.stack.container is not None
    total: int = chat.stack.container.aws.dynamodb().meta.config.retries["total_max_attempts"]
    return total


def dynamo_faults(chat: ChatStack) -> DynamoFaults:
    """Faults for the DynamoDB client every route of ``chat`` uses (one container serves them all)."""
    assert chat.stack.container is not None
    return DynamoFaults(chat.stack.container.aws.dynamodb())


def lost_transaction_responses(chat: ChatStack, *, lose: int, send_tokens: bool = True) -> LostTransactionResponses:
    """Lost answers (``LostTransactionResponses``) for the DynamoDB client every route of ``chat`` uses."""
    assert chat.stack.container is not None
    return LostTransactionResponses(chat.stack.container.aws.dynamodb(), lose=lose, send_tokens=send_tokens)


def stored(chat: ChatStack, session_id: str) -> list[dict[str, Any]]:
    """Every message item of the session as DynamoDB holds it (consistent read), by seq: the source of truth,
    read beside the app (not through its cache)."""
    items = _items(chat, session_id)
    bodies = [json.loads(i["body"]["S"]) for i in items if i["SK"]["S"].startswith("MSG#")]
    return sorted(bodies, key=lambda m: int(m["seq"]))


def meta(chat: ChatStack, session_id: str) -> dict[str, Any]:
    found = [i for i in _items(chat, session_id) if i["SK"]["S"] == "META"]
    assert len(found) == 1
    return found[0]


def _items(chat: ChatStack, session_id: str) -> list[dict[str, Any]]:
    client = boto3.client("dynamodb")
    return list(
        client.query(
            TableName=chat.settings.table_name,
            KeyConditionExpression="PK = :pk",
            ExpressionAttributeValues={":pk": {"S": f"SESSION#{session_id}"}},
            ConsistentRead=True,
        )["Items"]
    )


def roles_and_text(messages: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(m["role"], m.get("content") or "", m.get("status", "complete")) for m in messages]


def lease_held(chat: ChatStack, session_id: str) -> bool:
    return "active_turn_id" in meta(chat, session_id)


def turn_running(chat: ChatStack, session_id: str) -> bool:
    """The lease is held, or the replay log is not ended yet: the lease goes back with the answer's write, before
    the last chunks and the log's end are written, and until then a resume still follows the turn (200)."""
    if lease_held(chat, session_id):
        return True
    client = redis.Redis.from_url(chat.settings.redis_url)
    try:
        return client.exists(active_key(session_id)) == 1
    finally:
        client.close()


def post_turn(client: httpx.Client, session_id: str, text: str) -> tuple[httpx.Response, ParsedStream | None]:
    response = client.post(f"/sessions/{session_id}/stream", json={"message": text})
    return response, parse_sse(response.text) if response.status_code == 200 else None


def new_session(client: httpx.Client) -> str:
    created = client.post("/sessions", json={"title": "faults"})
    assert created.status_code == 201, created.text
    sid: str = created.json()["id"]
    return sid
