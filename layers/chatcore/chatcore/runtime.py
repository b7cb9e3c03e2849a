"""Running the engine as a Lambda function does: a state-machine step on a fresh event loop, and the in-process
entry points — the design documents' ``stream_chat_completion``, ``regenerate``, ``edit_message`` and
``answer_approval`` — all on the process's container."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from chatcore.container import default_container
from chatcore.stream import StreamEvent
from chatcore.turns import ChatEngine


def run_step(step: Callable[[ChatEngine, dict[str, Any]], Awaitable[dict[str, Any]]], event: dict[str, Any]) -> Any:
    """Run one state-machine step on a fresh event loop, closing the loop-bound clients (Redis, the LLM's HTTP
    pool) before it ends; boto3 clients and settings stay warm across invocations."""
    container = default_container()

    async def run() -> dict[str, Any]:
        try:
            return await step(container.engine, event)
        finally:
            await container.aclose()

    return asyncio.run(run())


async def stream_chat_completion(
    session_id: str, message: str, user_id: str | None = None, *, client_message_id: str | None = None
) -> AsyncIterator[StreamEvent]:
    """The design documents' entry point: one chat turn as an async generator of stream events
    (``StreamStart`` … ``StreamFinish``); when it ends, the session holds the turn's messages and usage."""
    async for event in default_container().engine.stream_chat_completion(
        session_id, message, user_id, client_message_id=client_message_id
    ):
        yield event


async def regenerate(
    session_id: str, user_id: str | None = None, *, message_id: str | None = None
) -> AsyncIterator[StreamEvent]:
    """Answer again: the answer ``message_id`` names (its turn id) or the last one; the old answer stays a version."""
    async for event in default_container().engine.regenerate(session_id, user_id, message_id=message_id):
        yield event


async def edit_message(
    session_id: str, client_message_id: str, text: str, user_id: str | None = None
) -> AsyncIterator[StreamEvent]:
    """A new version of the user message ``client_message_id`` with ``text``, and the answer to it; the old version
    and its answer stay reachable (``GET /sessions/{id}/messages/{id}/versions``). The same text is a resend."""
    async for event in default_container().engine.stream_chat_completion(
        session_id, text, user_id, client_message_id=client_message_id
    ):
        yield event


async def answer_approval(
    session_id: str, approval_id: str, approved: bool, user_id: str | None = None, *, reason: str | None = None
) -> AsyncIterator[StreamEvent]:
    """Approve or deny a tool call that waits, and stream the continuation of the message that asked."""
    async for event in default_container().engine.approve(session_id, approval_id, approved, user_id, reason=reason):
        yield event
