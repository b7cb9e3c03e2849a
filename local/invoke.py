"""``python -m local.invoke FUNCTION EVENT``: run a function's real handler on an event file (the same events
``sam local invoke`` takes) against the local embedded services, without Docker, and print the response.

    python -m local.invoke SessionsFunction events/sessions-list.json --seed
    python -m local.invoke ChatBufferedFunction events/chat-send.json --seed

``--seed`` creates the sample events' demo sessions first. The sample events' tokens and secrets come from
``events/env.json``; the LLM is the offline model unless ``LLM_BASE_URL`` is set.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from local.handlers import ROOT, invoke
from local.template import load_template

DEMO_USER = "demo-user"
DEMO_SESSIONS = ("demo-session-0001", "demo-session-0002")


def function_dirs() -> dict[str, str]:
    """Template logical id -> functions/<dir>; the chat function's buffered twin shares its directory."""
    dirs = {}
    for logical_id, res in load_template()["Resources"].items():
        if res["Type"] == "AWS::Serverless::Function":
            dirs[logical_id] = Path(res["Properties"]["CodeUri"]).name
    return dirs


def sample_environment() -> dict[str, str]:
    params: dict[str, str] = json.loads((ROOT / "events" / "env.json").read_text())["Parameters"]
    # The template's names are for `sam local invoke` (Docker); locally the embedded services are used.
    return {k: v for k, v in params.items() if k in ("JWT_SECRET", "CALLBACK_SECRET", "AUTH_MODE")}


async def seed(service: Any) -> None:
    from chatcore.models import ChatMessage, ChatSession

    for session_id in DEMO_SESSIONS:
        if await service.get_chat_session(session_id) is None:
            session = ChatSession.new(DEMO_USER, session_id=session_id, title="Demo session")
            turn_id = f"turn_demo-answer-{session_id[-4:]}"  # events/sessions-feedback-put.json rates it
            session.messages = [
                ChatMessage(role="user", content="Hello", turn_id=turn_id),
                ChatMessage(role="assistant", content="Hi! How can I help?", turn_id=turn_id),
            ]
            await service.upsert_chat_session(session)


def run(function: str, event: dict[str, Any]) -> Any:
    dirs = function_dirs()
    if function not in dirs:
        raise SystemExit(f"unknown function {function!r}; one of: {', '.join(sorted(dirs))}")
    if dirs[function] == "chat" and function == "ChatFunction":
        function = "ChatBufferedFunction"  # the streaming function's handler is run.sh; invoke its buffered twin
    return invoke(dirs[function], event, function)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.invoke", description=__doc__.split("\n")[0])
    parser.add_argument("function", help="logical id in template.yaml, e.g. SessionsFunction")
    parser.add_argument("event", type=Path, help="event file, e.g. events/sessions-list.json")
    parser.add_argument("--seed", action="store_true", help="create the sample events' demo sessions first")
    args = parser.parse_args(argv)

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    for key, value in sample_environment().items():
        os.environ.setdefault(key, value)
    from local.stack import LocalStack

    stack = LocalStack().start()
    try:
        if args.seed:
            from chatcore.sessions import default_service

            on_loop(_seed_and_close(default_service()))
        response = run(args.function, json.loads(args.event.read_text()))
        print(json.dumps(response, indent=2, ensure_ascii=False))
    finally:
        stack.stop()
    return 0


def on_loop(coroutine: Any) -> Any:
    """Run on this thread's event loop and leave it set: Mangum-based handlers run on the current loop, as in
    Lambda, where nothing calls asyncio.run() between invocations."""
    try:
        loop = asyncio.get_event_loop_policy().get_event_loop()
    except RuntimeError:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
    return loop.run_until_complete(coroutine)


async def _seed_and_close(service: Any) -> None:
    try:
        await seed(service)
    finally:
        await service.aclose()


if __name__ == "__main__":
    sys.exit(main())
