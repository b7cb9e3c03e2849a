"""Fuzz the sessions API: whatever arrives, the answer is a JSON 2xx/4xx, never a 5xx, and a 4xx writes nothing."""

from __future__ import annotations

import asyncio
import json

import boto3
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatcore.auth import Authenticator
from chatcore.config import Settings
from chatcore.container import Container
from chatcore.models import ChatMessage
from chatcore.web.sessions_app import create_sessions_app
from tests.support.tokens import SECRET, auth_header

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=50)
    | st.sampled_from(["up", "down"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
FIELDS = st.sampled_from(
    ["title", "chat_type", "status", "metadata", "session_ids", "owner", "version", "context", "rating", "comment", ""]
)
BODIES = (
    st.dictionaries(FIELDS, JSON_VALUES, max_size=4).map(lambda d: json.dumps(d).encode())
    | JSON_VALUES.map(lambda v: json.dumps(v).encode())
    | st.binary(max_size=200)
)
SEGMENTS = st.sampled_from(
    [
        *("sessions", "{sid}", "messages", "{tid}", "feedback", "users", "me", "context"),
        *("batch-delete", "openapi.json", "..", "%00", "x" * 200, ""),
    ]
)
PATHS = st.lists(SEGMENTS, min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts))
QUERIES = st.dictionaries(
    st.sampled_from(["limit", "cursor", "status", "chat_type", "x"]),
    st.text(max_size=30) | st.integers(-5, 500).map(str),
    max_size=3,
)
TURN_ID = "turn_fuzzanswer1"  # the answer of the fuzzed session: its feedback route exists
METHODS = st.sampled_from(["GET", "POST", "PATCH", "DELETE", "PUT"])
HEADERS = st.sampled_from([auth_header("alice"), auth_header("bob"), {}, {"authorization": "Bearer x.y.z"}])


@pytest.fixture
def runner():
    with asyncio.Runner() as r:
        yield r


def _scan(table: str) -> list[str]:
    items = boto3.client("dynamodb").scan(TableName=table)["Items"]
    return sorted(json.dumps(i, sort_keys=True) for i in items)


def test_fuzz_never_5xx(runner: asyncio.Runner, table_name: str, redis_url: str):
    config = Settings(table_name=table_name, redis_url=redis_url, jwt_secret=SECRET)
    service = Container(config).sessions
    app = create_sessions_app(service, Authenticator(config), config)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://fuzz")
    created = runner.run(client.post("/sessions", json={"title": "fuzz"}, headers=auth_header("alice")))
    sid = created.json()["id"]
    session = runner.run(service.get_chat_session(sid))
    assert session is not None
    session.messages = [
        ChatMessage(role="user", content="q", turn_id=TURN_ID),
        ChatMessage(role="assistant", content="a", turn_id=TURN_ID),
    ]
    runner.run(service.upsert_chat_session(session))

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(method=METHODS, path=PATHS, query=QUERIES, body=BODIES, headers=HEADERS)
    def check(method, path, query, body, headers):
        before = _scan(table_name)
        response = runner.run(
            client.request(
                method,
                "http://fuzz" + path.format(sid=sid, tid=TURN_ID),  # absolute: httpx refuses a relative "//..." path
                params=query,
                content=body if method in ("POST", "PATCH", "PUT") else None,
                headers={**headers, "content-type": "application/json"},
            )
        )
        assert response.status_code < 500, (method, path, query, body, response.text)
        if response.status_code != 204:
            payload = response.json()
        if response.status_code >= 400:
            assert set(payload) == {"error"} and {"code", "message"} <= set(payload["error"])
            assert _scan(table_name) == before

    try:
        check()
    finally:
        runner.run(client.aclose())
        runner.run(service.aclose())
