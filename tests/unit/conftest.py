"""The engine with in-memory fakes of its ports (``tests/unit/fakes.py``), shared by the engine's unit tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import BaseModel

from chatcore.config import Settings
from chatcore.models import ChatSession
from chatcore.tools import ToolContext, ToolRegistry
from chatcore.turn_types import ChatDeps
from chatcore.turns import ChatEngine
from tests.unit.fakes import InMemoryApprovals, InMemoryReplay, InMemorySessions, InMemoryUserContexts, ScriptedModel


class AddArgs(BaseModel):
    a: int
    b: int


async def add(args: AddArgs, ctx: ToolContext) -> dict[str, Any]:
    return {"sum": args.a + args.b}


class MailArgs(BaseModel):
    to: str


SENT_MAIL: list[str] = []


async def send_mail(args: MailArgs, ctx: ToolContext) -> dict[str, Any]:
    """A tool with a side effect: it asks for approval first."""
    SENT_MAIL.append(args.to)
    return {"sent": True, "to": args.to}


@dataclass
class Parts:
    engine: ChatEngine
    sessions: InMemorySessions
    replay: InMemoryReplay
    model: ScriptedModel
    session_id: str
    approvals: InMemoryApprovals
    contexts: InMemoryUserContexts


@pytest.fixture
def parts() -> Parts:
    sessions, replay, model = InMemorySessions(), InMemoryReplay(), ScriptedModel()
    tools = ToolRegistry()
    tools.tool("Add two integers.")(add)
    tools.tool("Send a mail.", requires_approval=True)(send_mail)
    SENT_MAIL.clear()
    approvals = InMemoryApprovals()
    contexts = InMemoryUserContexts(sessions)
    settings = Settings(title_timeout_seconds=1.0, max_tool_rounds=2, llm_context_tokens=16_000)
    deps = ChatDeps(
        settings=settings,
        sessions=sessions,
        leases=sessions,
        llm=model,
        tools=tools,
        replay=replay,
        system_prompt=lambda: "You are a test.",
        approvals=approvals,
        contexts=contexts,
    )
    session = sessions.add(ChatSession.new("alice"))
    return Parts(ChatEngine(deps), sessions, replay, model, session.session_id, approvals, contexts)


def stored(parts: Parts) -> ChatSession:
    return parts.sessions.sessions[parts.session_id]
