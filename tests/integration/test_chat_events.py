"""Every events/chat-*.json through the real ChatFunction buffered handler (Mangum), as `sam local invoke` runs it."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from chatcore.config import Settings
from chatcore.container import set_default_container
from local.offline_llm import OfflineLLM
from tests.integration.test_sessions_events import SAMPLE_ENV, _seed
from tests.support.handlers import EVENTS, FakeLambdaContext, load_event, load_handler_module
from tests.support.sse import parse_sse

EXPECTED = {
    "chat-health": 200,
    "chat-send": 200,
    "chat-send-tool": 200,
    "chat-simple-stream": 200,
    "chat-resume": 204,
    "chat-stop": 204,
    "chat-error-unauthorized": 401,
    "chat-error-empty-message": 422,
    "chat-error-bad-json": 400,
    "chat-error-no-user-message": 422,
}


def test_every_chat_event_has_an_expectation():
    assert {p.stem for p in EVENTS.glob("chat-*.json")} == set(EXPECTED)


@pytest.fixture
def chat_handler(lambda_env: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    with OfflineLLM() as llm:
        monkeypatch.setenv("JWT_SECRET", SAMPLE_ENV["JWT_SECRET"])
        monkeypatch.setenv("LLM_BASE_URL", llm.base_url)
        monkeypatch.setenv("LLM_API_KEY", "offline")
        set_default_container(None)
        load_handler_module.cache_clear()  # a module keeps its app for the container's life: load it afresh
        yield load_handler_module("chat").handler


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample_chat_event_through_the_real_handler(name: str, chat_handler, lambda_env: Settings):
    _seed(lambda_env)
    response = chat_handler(load_event(name), FakeLambdaContext())
    assert response["statusCode"] == EXPECTED[name], response.get("body")
    if response["statusCode"] == 200 and name != "chat-health":
        assert response["headers"]["content-type"].startswith("text/event-stream")
        stream = parse_sse(response["body"])
        assert stream.done and stream.types[0] == "start" and stream.types[-1] == "finish"
        assert not stream.of_type("error")
    elif response["statusCode"] >= 400:
        assert json.loads(response["body"])["error"]["code"]
