"""Every sample event in events/ through the real SessionsFunction handler (the events `sam local invoke` takes)."""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from chatcore.config import Settings
from chatcore.container import Container, set_default_container
from local.invoke import seed
from tests.support.handlers import EVENTS, FakeLambdaContext, load_event, load_handler_module

SAMPLE_ENV = json.loads((EVENTS / "env.json").read_text())["Parameters"]

EXPECTED = {
    "sessions-health": 200,
    "sessions-openapi": 200,
    "sessions-create": 201,
    "sessions-list": 200,
    "sessions-get": 200,
    "sessions-messages": 200,
    "sessions-update": 200,
    "sessions-delete": 204,
    "sessions-batch-delete": 200,
    "sessions-feedback-put": 200,
    "sessions-context-put": 200,
    "sessions-context-get": 200,
    "sessions-error-unauthorized": 401,
    "sessions-error-bad-json": 400,
    "sessions-error-not-found": 404,
    "sessions-error-validation": 422,
}


def test_every_sessions_event_has_an_expectation():
    names = {p.stem for p in EVENTS.glob("sessions-*.json")}
    assert names == set(EXPECTED)


@pytest.fixture
def handler(lambda_env: Settings, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("JWT_SECRET", SAMPLE_ENV["JWT_SECRET"])
    set_default_container(None)
    load_handler_module.cache_clear()  # a module keeps its app for the container's life: load it afresh
    return load_handler_module("sessions").handler


def _seed(settings: Settings) -> None:
    async def run() -> None:
        service = Container(settings).sessions
        try:
            await seed(service)
        finally:
            await service.aclose()

    asyncio.get_event_loop().run_until_complete(run())  # the loop lambda_env set up


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample_event_through_the_real_handler(name: str, handler, lambda_env: Settings):
    _seed(lambda_env)
    response = handler(load_event(name), FakeLambdaContext())
    assert response["statusCode"] == EXPECTED[name], response.get("body")
    if response["statusCode"] != 204:
        assert response["headers"]["content-type"] == "application/json"
        json.loads(response["body"])
    assert os.environ["JWT_SECRET"] == SAMPLE_ENV["JWT_SECRET"]
