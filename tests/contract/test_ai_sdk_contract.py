"""The published `ai` npm package (what `useChat` runs) is the oracle: it must accept our streams and assemble
exactly the message we persisted. Runs every pinned client version (see tests/contract/package.json)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ChatStack
from tests.integration.test_chat_turns import history, ui_body
from tests.support.tokens import make_token

HERE = Path(__file__).resolve().parent
CLIENTS = ["ai", "ai5-strict", "ai6"]


def oracle(mode: str, url: str, token: str, *args: str, body: dict[str, Any] | None = None, client: str) -> dict:
    node = shutil.which("node")
    assert node, "node is required for the contract tests"
    assert (HERE / "node_modules" / "ai").is_dir(), "run: npm ci --prefix tests/contract"
    command = [node, str(HERE / "oracle.mjs"), mode, "--url", url, "--token", token, "--ai", client, *args]
    if body is not None:
        command += ["--body", json.dumps(body)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=90, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def _token(chat: ChatStack, user: str = "alice") -> str:
    return make_token(user, secret=chat.settings.jwt_secret)


def _texts(message: dict) -> str:
    return "".join(part["text"] for part in message["parts"] if part["type"] == "text")


@pytest.mark.parametrize("client", CLIENTS)
def test_plain_answer_is_accepted_and_matches_storage(chat_stack: ChatStack, client: str):
    sid = f"contract-plain-{client}"
    out = oracle("chat", f"{chat_stack.url}/chat", _token(chat_stack), body=ui_body(sid, "Hello oracle"), client=client)
    assert out["status"] == 200 and out["ok"], out["error"]
    message = out["message"]
    with chat_stack.client() as http:
        stored = history(chat_stack, http, sid)
    assert message["role"] == "assistant" and message["id"].startswith("turn_")
    assert _texts(message) == stored[-1]["content"]
    titles = [p for p in message["parts"] if p["type"] == "data-title"]
    assert titles and titles[0]["data"]["title"] == "Hello Oracle"


@pytest.mark.parametrize("client", CLIENTS)
def test_tool_call_and_output_are_accepted(chat_stack: ChatStack, client: str):
    sid = f"contract-tool-{client}"
    prompt = 'Use it [[tool:calculator {"expression": "2**10"}]]'
    out = oracle("chat", f"{chat_stack.url}/chat", _token(chat_stack), body=ui_body(sid, prompt), client=client)
    assert out["ok"], out["error"]
    tools = [p for p in out["message"]["parts"] if p["type"] == "dynamic-tool"]
    assert len(tools) == 1
    tool = tools[0]
    assert tool["toolName"] == "calculator" and tool["state"] == "output-available"
    assert tool["input"] == {"expression": "2**10"} and tool["output"]["result"] == 1024
    with chat_stack.client() as http:
        stored = history(chat_stack, http, sid)
    assert [m["role"] for m in stored] == ["user", "assistant", "tool", "assistant"]
    assert json.loads(stored[2]["content"]) == tool["output"]
    assert stored[1]["tool_calls"][0]["id"] == tool["toolCallId"]
    assert _texts(out["message"]) == stored[3]["content"]


@pytest.mark.parametrize("client", CLIENTS)
def test_resume_after_the_post_was_cut(chat_stack: ChatStack, client: str):
    chat_stack.llm.token_delay = 0.01
    sid = f"contract-resume-{client}"
    token = _token(chat_stack)
    cut = oracle(
        "chat",
        f"{chat_stack.url}/chat",
        token,
        "--abort-after-chunks",
        "8",
        body=ui_body(sid, "[[long:120]]"),
        client=client,
    )
    assert cut["aborted"] and len(cut["chunks"]) == 8
    resumed = oracle("resume", f"{chat_stack.url}/chat/{sid}/stream", token, client=client)
    assert resumed["status"] == 200 and resumed["ok"], resumed["error"]
    assert resumed["chunks"][:8] == cut["chunks"]  # the whole turn again, from its first chunk
    with chat_stack.client() as http:
        stored = history(chat_stack, http, sid)
    assert _texts(resumed["message"]) == stored[-1]["content"]
    assert len(stored[-1]["content"].split()) == 120
    after = oracle("resume", f"{chat_stack.url}/chat/{sid}/stream", token, client=client)
    assert after["status"] == 204
