"""`python -m local.invoke`: every sample event in events/ runs through its function's real handler against the
local embedded services (no Docker), the way `sam local invoke` would run it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from local.invoke import function_dirs, run, sample_environment, seed
from local.stack import LocalStack
from tests.integration.test_chat_events import EXPECTED as CHAT_EXPECTED
from tests.integration.test_sessions_events import EXPECTED as SESSIONS_EXPECTED
from tests.support.deploy import handler_loop

ROOT = Path(__file__).resolve().parents[2]
EVENTS = sorted(p for p in (ROOT / "events").glob("*.json") if p.name != "env.json")
FUNCTION_OF_PREFIX = {
    "sessions": "SessionsFunction",
    "chat": "ChatBufferedFunction",
    "toolworker": "ToolWorkerFunction",
    "continuation": "ContinuationFunction",
    "callback": "CallbackFunction",
}
STEP_RESULTS = {  # the state machine steps answer dicts; with no such operation they do nothing
    "toolworker-run-tool": {"ok": False},
    "toolworker-register-callback": {"ok": False},
    "continuation-save": {"saved": False},
    "continuation-save-failure": {"saved": False},
    "continuation-continue": {"turn_id": None},
    "continuation-finish": {"status": "unknown"},
}
STATUS = (
    SESSIONS_EXPECTED | CHAT_EXPECTED | {"callback-error-bad-signature": 401, "callback-error-bad-operation-id": 400}
)


def test_every_event_file_is_covered():
    names = {p.stem for p in EVENTS}
    assert names == set(STATUS) | set(STEP_RESULTS)
    assert {FUNCTION_OF_PREFIX[n.split("-")[0]] for n in names} <= set(function_dirs())


@pytest.fixture
def local_stack(table_name: str, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalStack]:
    for key, value in sample_environment().items():
        monkeypatch.setenv(key, value)
    stack = LocalStack(aws="external", table=table_name, redis_url=redis_url).start()
    with handler_loop():
        asyncio.get_event_loop().run_until_complete(_seed())
        yield stack
    stack.stop()


async def _seed() -> None:
    from chatcore.sessions import default_service

    service = default_service()
    try:
        await seed(service)
    finally:
        await service.aclose()


@pytest.mark.parametrize("event_file", EVENTS, ids=lambda p: p.stem)
def test_local_invoke_of_every_sample_event(event_file: Path, local_stack: LocalStack):
    name = event_file.stem
    response = run(FUNCTION_OF_PREFIX[name.split("-")[0]], json.loads(event_file.read_text()))
    if name in STEP_RESULTS:
        assert STEP_RESULTS[name].items() <= response.items(), response
    else:
        assert response["statusCode"] == STATUS[name], response.get("body")


def test_the_command_line(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k not in ("REDIS_URL", "JWT_SECRET")}
    result = subprocess.run(
        [sys.executable, "-m", "local.invoke", "SessionsFunction", "events/sessions-get.json", "--seed"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    response = json.loads(result.stdout[result.stdout.index("{\n") :])
    assert response["statusCode"] == 200 and json.loads(response["body"])["id"] == "demo-session-0001"
