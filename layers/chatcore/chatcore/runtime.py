"""Wiring: the chat engine as a Lambda function runs it, built from settings on first use and kept warm."""

from __future__ import annotations

import asyncio
from functools import cache

from chatcore.aws import read_parameter
from chatcore.builtin_tools import default_registry
from chatcore.config import Settings, get_settings
from chatcore.context import TimedCache
from chatcore.llm import LLM
from chatcore.replay import ReplayLog
from chatcore.sessions import SessionService, default_service
from chatcore.stream import ProtocolProfile
from chatcore.tools import ToolRegistry
from chatcore.turns import ChatDeps, ChatEngine

SYSTEM_PROMPT_TTL_SECONDS = 300.0


def system_prompt_source(settings: Settings) -> TimedCache:
    """The system prompt: SSM parameter ``SYSTEM_PROMPT_PARAMETER`` when set (cached 5 minutes), else config."""
    if settings.system_prompt_parameter:
        name = settings.system_prompt_parameter
        return TimedCache(lambda: read_parameter(name), SYSTEM_PROMPT_TTL_SECONDS)
    return TimedCache(lambda: settings.system_prompt, float("inf"))


def build_engine(
    settings: Settings,
    sessions: SessionService,
    *,
    llm: LLM | None = None,
    tools: ToolRegistry | None = None,
) -> ChatEngine:
    prompt = system_prompt_source(settings)
    deps = ChatDeps(
        settings=settings,
        sessions=sessions,
        llm=llm or LLM(settings),
        tools=tools or default_registry(),
        replay=ReplayLog(sessions.cache.connector, ttl_seconds=settings.replay_ttl_seconds),
        system_prompt=prompt.get,
        profile=ProtocolProfile(finish_reason=settings.stream_finish_reason),
    )
    return ChatEngine(deps)


@cache
def default_engine() -> ChatEngine:
    return build_engine(get_settings(), default_service())


async def warm_system_prompt(engine: ChatEngine) -> None:
    """Read the (possibly SSM-backed) prompt in a thread so the first turn does not block the loop."""
    await asyncio.to_thread(engine.deps.system_prompt)
