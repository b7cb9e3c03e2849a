"""Wiring: the chat engine as a Lambda function runs it, built from settings on first use and kept warm."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import cache
from typing import Any

from chatcore.aws import read_parameter
from chatcore.builtin_tools import default_registry
from chatcore.config import Settings, get_settings
from chatcore.context import TimedCache
from chatcore.llm import LLM
from chatcore.operations import Operations
from chatcore.replay import ReplayLog
from chatcore.sessions import SessionLeases, SessionService, default_service
from chatcore.stream import ProtocolProfile, StreamEvent
from chatcore.tools import ToolRegistry
from chatcore.turn_types import ChatDeps
from chatcore.turns import ChatEngine

SYSTEM_PROMPT_TTL_SECONDS = 300.0


def system_prompt_source(settings: Settings) -> TimedCache:
    """The system prompt: SSM parameter ``SYSTEM_PROMPT_PARAMETER`` when set (cached 5 minutes), else config."""
    if settings.system_prompt_parameter:
        name = settings.system_prompt_parameter
        return TimedCache(lambda: read_parameter(name), SYSTEM_PROMPT_TTL_SECONDS)
    return TimedCache(lambda: settings.system_prompt, float("inf"))


def build_operations(settings: Settings, sessions: SessionService) -> Operations | None:
    """Long-running tools, when a state machine is configured."""
    if not settings.state_machine_arn:
        return None
    return Operations(
        settings.table_name,
        settings.state_machine_arn,
        sessions.cache.connector,
        guard_seconds=settings.operation_guard_seconds,
        timeouts={
            "tool_timeout_seconds": settings.tool_timeout_seconds,
            "callback_heartbeat_seconds": settings.callback_heartbeat_seconds,
            "callback_timeout_seconds": settings.callback_timeout_seconds,
        },
    )


def build_engine(
    settings: Settings,
    sessions: SessionService,
    *,
    llm: LLM | None = None,
    tools: ToolRegistry | None = None,
) -> ChatEngine:
    prompt = system_prompt_source(settings)
    operations = build_operations(settings, sessions)
    deps = ChatDeps(
        settings=settings,
        sessions=sessions,
        leases=SessionLeases(sessions.store, sessions.cache),
        llm=llm or LLM(settings),
        tools=tools or default_registry(),
        replay=ReplayLog(sessions.cache.connector, ttl_seconds=settings.replay_ttl_seconds),
        system_prompt=prompt.get,
        profile=ProtocolProfile(finish_reason=settings.stream_finish_reason),
        operations=operations,
    )
    return ChatEngine(deps)


@cache
def default_engine() -> ChatEngine:
    return build_engine(get_settings(), default_service())


def run_step(step: Callable[[ChatEngine, dict[str, Any]], Awaitable[dict[str, Any]]], event: dict[str, Any]) -> Any:
    """Run one state-machine step on a fresh event loop, closing the loop-bound clients (Redis, the LLM's HTTP
    pool) before it ends; boto3 clients and settings stay warm across invocations."""
    engine = default_engine()

    async def run() -> dict[str, Any]:
        try:
            return await step(engine, event)
        finally:
            await engine.deps.sessions.aclose()
            await engine.deps.llm.aclose()

    return asyncio.run(run())


async def stream_chat_completion(
    session_id: str, message: str, user_id: str | None = None, *, client_message_id: str | None = None
) -> AsyncIterator[StreamEvent]:
    """The design documents' entry point: one chat turn as an async generator of stream events
    (``StreamStart`` … ``StreamFinish``); when it ends, the session holds the turn's messages and usage."""
    async for event in default_engine().stream_chat_completion(
        session_id, message, user_id, client_message_id=client_message_id
    ):
        yield event
