"""Shared fixtures: moto over loopback HTTP, a real redis-server, a fresh table per test built from template.yaml."""

from __future__ import annotations

import gc
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import httpx
import pytest
import redis

from chatcore.config import Settings
from chatcore.container import Container, set_default_container
from chatcore.sessions import SessionService
from chatcore.tools import ToolRegistry
from local.moto_server import MotoServer
from local.offline_llm import OfflineLLM
from local.server import ServerThread
from local.stack import LocalStack
from local.template import create_table_kwargs
from tests.support.deploy import handler_loop
from tests.support.redis_cluster import RedisCluster
from tests.support.redis_server import RedisServer, free_port
from tests.support.tokens import SECRET, auth_header

# Records every AWS call with the function it runs as (checked against template.yaml's roles by tests/iam).
pytest_plugins = ["tests.iam.recording"]

_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "POWERTOOLS_METRICS_NAMESPACE": "ChatBackendTests",
    "POWERTOOLS_LOG_LEVEL": "WARNING",
}


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _heap_unfrozen() -> Iterator[None]:
    """A handler module's import (``chatcore.coldstart``) and the before-snapshot hook freeze every object alive in
    the process, which in Lambda is what init built. Here that would be the test process's heap: each test hands it
    back to the collector, so nothing a test leaves behind escapes collection (or its ResourceWarning)."""
    yield
    gc.unfreeze()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    server = MotoServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session", autouse=True)
def aws_environment(moto_server: MotoServer) -> Iterator[None]:
    patch = pytest.MonkeyPatch()
    for key, value in _AWS_ENV.items():
        patch.setenv(key, value)
    patch.setenv("AWS_ENDPOINT_URL", moto_server.url)
    patch.setenv("MOTO_PORT", str(moto_server.port))  # moto's Step Functions interpreter calls Lambda here
    for key in ("AWS_PROFILE", "REDIS_URL", "CHAT_TABLE_NAME"):
        patch.delenv(key, raising=False)
    yield
    patch.undo()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """Three cluster-mode masters, TLS only, certificates from a test CA: what ElastiCache Serverless looks like."""
    cluster = RedisCluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
def table_name() -> Iterator[str]:
    name = f"chat-{uuid.uuid4().hex[:12]}"
    client = boto3.client("dynamodb", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    client.create_table(**create_table_kwargs(name))
    yield name
    client.delete_table(TableName=name)


@pytest.fixture
def settings(table_name: str, redis_url: str) -> Settings:
    return Settings(table_name=table_name, redis_url=redis_url, auth_mode="hs256", jwt_secret=SECRET)


@pytest.fixture
async def service(settings: Settings) -> AsyncIterator[SessionService]:
    svc = Container(settings).sessions
    yield svc
    await svc.aclose()


@pytest.fixture
def lambda_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Environment for running the real Lambda handlers: settings from os.environ, and one event loop that
    Mangum reuses across invocations (as in a warm Lambda) and that is closed cleanly afterwards."""
    monkeypatch.setenv("CHAT_TABLE_NAME", settings.table_name)
    monkeypatch.setenv("REDIS_URL", settings.redis_url)
    monkeypatch.setenv("AUTH_MODE", "hs256")
    monkeypatch.setenv("JWT_SECRET", SECRET)
    set_default_container(None)
    with handler_loop():
        yield settings


@dataclass
class ChatStack:
    stack: LocalStack
    server: ServerThread
    settings: Settings

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def llm(self) -> OfflineLLM:
        assert self.stack.llm is not None
        return self.stack.llm

    @property
    def service(self) -> SessionService:
        assert self.stack.service is not None
        return self.stack.service

    def client(self, user: str = "alice", **kwargs: Any) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers=auth_header(user, secret=self.settings.jwt_secret), timeout=30, **kwargs
        )


CHAT_TEST_SETTINGS: dict[str, Any] = {
    "llm_timeout_seconds": 3.0,
    "heartbeat_seconds": 1.0,
    "title_timeout_seconds": 3.0,
    "llm_max_retries": 2,
}


def start_chat_stack(
    table_name: str, redis_url: str, *, tools: ToolRegistry | None = None, **overrides: Any
) -> ChatStack:
    port = free_port()
    stack = LocalStack(
        aws="external",
        table=table_name,
        redis_url=redis_url,
        overrides={**CHAT_TEST_SETTINGS, **overrides},
        public_url=f"http://127.0.0.1:{port}",
        tools=tools,
    ).start()
    server = ServerThread(stack.app, port=port).start()
    assert stack.settings is not None
    return ChatStack(stack, server, stack.settings)


def stop_chat_stack(chat: ChatStack) -> None:
    if chat.stack.engine is not None:
        chat.server.call(chat.stack.engine.aclose())
    if chat.stack.service is not None:
        chat.server.call(chat.stack.service.aclose())
    chat.server.stop()
    chat.stack.stop()


@pytest.fixture
def chat_stack(table_name: str, redis_url: str) -> Iterator[ChatStack]:
    """The whole chat backend (sessions + chat routes, offline LLM, real Redis, moto) on a loopback port."""
    chat = start_chat_stack(table_name, redis_url)
    yield chat
    stop_chat_stack(chat)
