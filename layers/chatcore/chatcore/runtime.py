"""Running the engine as a Lambda function does: a state-machine step on a fresh event loop, and the design
documents' ``stream_chat_completion`` entry point — both on the process's container."""

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
