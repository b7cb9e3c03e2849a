"""The published `ai` npm package (what `useChat` runs) is the oracle: it must accept our streams and assemble
exactly the message we persisted. Runs every pinned client version (see tests/contract/package.json), each at the
protocol level its major accepts, and checks the level table (``chatcore.stream.LEVELS``) against the real clients:
what a level sends is accepted by its clients, and what it leaves out is rejected by them."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from chatcore.lapsed import INTERRUPTED_TEXT, STOPPED_TOOL_TEXT, DeadTurn
from chatcore.stream import (
    DENIED_TEXT,
    DONE,
    LEVELS,
    STREAM_HEADERS,
    StreamEvent,
    StreamFinish,
    StreamFinishStep,
    StreamStart,
    StreamStartStep,
    StreamTextDelta,
    StreamTextEnd,
    StreamTextStart,
    StreamToolApprovalRequest,
    StreamToolInputAvailable,
    StreamToolInputDelta,
    StreamToolInputStart,
    StreamToolOutputAvailable,
    StreamToolOutputDenied,
    approval_granted,
    encode_json,
    sse,
)
from tests.conftest import ChatStack
from tests.integration.test_chat_turns import history, ui_body
from tests.support.tokens import make_token

HERE = Path(__file__).resolve().parent
# Each pinned client with the level of its major: ai = the latest 5.x, ai5-strict = the last strict 5.x.
CLIENTS = [("ai5-strict", "v5"), ("ai", "v5"), ("ai6", "v6"), ("ai7", "v7")]
BY_LEVEL = {level: [client for client, at in CLIENTS if at == level] for level in LEVELS}


def _node() -> str:
    node = shutil.which("node")
    assert node, "node is required for the contract tests"
    assert (HERE / "node_modules" / "ai").is_dir(), "run: npm ci --prefix tests/contract"
    return node


def oracle_command(
    mode: str,
    url: str,
    *args: str,
    client: str,
    token: str = "t",
    level: str | None = None,
    body: dict[str, Any] | None = None,
    message: dict[str, Any] | None = None,
) -> list[str]:
    command = [_node(), str(HERE / "oracle.mjs"), mode, "--url", url, "--token", token, "--ai", client, *args]
    if level is not None:
        command += ["--level", level]
    if body is not None:
        command += ["--body", json.dumps(body)]
    if message is not None:
        command += ["--message", json.dumps(message)]
    return command


def _output(stdout: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    return out


def oracle(mode: str, url: str, *args: str, client: str, **options: Any) -> dict[str, Any]:
    command = oracle_command(mode, url, *args, client=client, **options)
    return _output(subprocess.run(command, capture_output=True, text=True, timeout=90, check=True).stdout)


def _token(chat: ChatStack, user: str = "alice") -> str:
    return make_token(user, secret=chat.settings.jwt_secret)


def _texts(message: dict[str, Any]) -> str:
    return "".join(part["text"] for part in message["parts"] if part["type"] == "text")


def _parts(message: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [part for part in message["parts"] if part["type"] == kind]


# -- the backend, each client at its level ----------------------------------------------------------------------


@pytest.mark.parametrize(("client", "level"), CLIENTS)
def test_plain_answer_is_accepted_and_matches_storage(chat_stack: ChatStack, client: str, level: str):
    sid = f"contract-plain-{client}"
    out = oracle(
        "chat",
        f"{chat_stack.url}/chat",
        client=client,
        level=level,
        token=_token(chat_stack),
        body=ui_body(sid, "Hello oracle"),
    )
    assert out["status"] == 200 and out["ok"], out["error"]
    message = out["message"]
    with chat_stack.client() as http:
        stored = history(chat_stack, http, sid)
    assert message["role"] == "assistant" and message["id"].startswith("turn_")
    assert _texts(message) == stored[-1]["content"]
    titles = _parts(message, "data-title")
    assert titles and titles[0]["data"]["title"] == "Hello Oracle"
    finish = out["chunks"][-1]
    assert finish["type"] == "finish" and ("finishReason" in finish) == LEVELS[level].finish_reason


@pytest.mark.parametrize(("client", "level"), CLIENTS)
def test_tool_call_and_output_are_accepted(chat_stack: ChatStack, client: str, level: str):
    sid = f"contract-tool-{client}"
    prompt = 'Use it [[tool:calculator {"expression": "2**10"}]]'
    out = oracle(
        "chat",
        f"{chat_stack.url}/chat",
        client=client,
        level=level,
        token=_token(chat_stack),
        body=ui_body(sid, prompt),
    )
    assert out["ok"], out["error"]
    tools = _parts(out["message"], "dynamic-tool")
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


@pytest.mark.parametrize(("client", "level"), CLIENTS)
def test_resume_after_the_post_was_cut(chat_stack: ChatStack, client: str, level: str):
    chat_stack.llm.token_delay = 0.01
    sid = f"contract-resume-{client}"
    token = _token(chat_stack)
    cut = oracle(
        "chat",
        f"{chat_stack.url}/chat",
        "--abort-after-chunks",
        "8",
        client=client,
        level=level,
        token=token,
        body=ui_body(sid, "[[long:120]]"),
    )
    assert cut["aborted"] and len(cut["chunks"]) == 8
    resumed = oracle("resume", f"{chat_stack.url}/chat/{sid}/stream", client=client, level=level, token=token)
    assert resumed["status"] == 200 and resumed["ok"], resumed["error"]
    assert resumed["chunks"][:8] == cut["chunks"]  # the whole turn again, from its first chunk
    with chat_stack.client() as http:
        stored = history(chat_stack, http, sid)
    assert _texts(resumed["message"]) == stored[-1]["content"]
    assert len(stored[-1]["content"].split()) == 120
    after = oracle("resume", f"{chat_stack.url}/chat/{sid}/stream", client=client, level=level, token=token)
    assert after["status"] == 204


def test_a_v5_tab_and_a_v7_tab_resume_one_turn_each_at_its_level(chat_stack: ChatStack):
    chat_stack.llm.token_delay = 0.01
    sid = "contract-two-levels"
    token = _token(chat_stack)
    cut = oracle(
        "chat",
        f"{chat_stack.url}/chat",
        "--abort-after-chunks",
        "4",
        client="ai5-strict",
        level="v5",
        token=token,
        body=ui_body(sid, "[[long:300]]"),
    )
    assert cut["aborted"]
    resume_url = f"{chat_stack.url}/chat/{sid}/stream"
    tabs = {
        level: subprocess.Popen(
            oracle_command("resume", resume_url, client=client, level=level, token=token),
            stdout=subprocess.PIPE,
            text=True,
        )
        for client, level in (("ai5-strict", "v5"), ("ai7", "v7"))
    }
    outs = {level: _output(tab.communicate(timeout=90)[0]) for level, tab in tabs.items()}
    for level, out in outs.items():
        assert out["status"] == 200 and out["ok"], (level, out["error"])
        assert len(_texts(out["message"]).split()) == 300
    assert outs["v5"]["chunks"][-1] == {"type": "finish"}
    assert outs["v7"]["chunks"][-1] == {"type": "finish", "finishReason": "stop"}
    assert _texts(outs["v5"]["message"]) == _texts(outs["v7"]["message"])


# -- the level table against the clients: synthetic streams from the stored form --------------------------------


class _Streams(ThreadingHTTPServer):
    streams: dict[str, list[dict[str, Any]]]


class _Handler(BaseHTTPRequestHandler):
    server: _Streams

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self._answer()

    def do_GET(self) -> None:
        self._answer()

    def _answer(self) -> None:
        chunks = self.server.streams.get(self.path.strip("/"))
        if chunks is None:
            self.send_error(404)
            return
        body = b"".join(sse(encode_json(chunk)) for chunk in chunks) + DONE
        self.send_response(200)
        for key, value in STREAM_HEADERS.items():
            if key != "connection":
                self.send_header(key, value)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def streams() -> Iterator[_Streams]:
    """A loopback server answering `/<name>` with the SSE stream of `streams[name]` (chunks as given)."""
    server = _Streams(("127.0.0.1", 0), _Handler)
    server.streams = {}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _play(
    server: _Streams,
    name: str,
    stored: list[dict[str, Any]],
    *,
    level: str,
    client: str,
    message: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What `client` makes of the stored chunks as `level` adapts them."""
    server.streams[name] = [out for chunk in stored for out in LEVELS[level].adapt(chunk)]
    body = ui_body("synthetic", "hi")
    url = f"http://127.0.0.1:{server.server_address[1]}/{name}"
    return oracle("chat", url, client=client, body=body, message=message)


def _stored(*events: StreamEvent | dict[str, Any]) -> list[dict[str, Any]]:
    return [event if isinstance(event, dict) else event.chunk() for event in events]


MESSAGE_ID, CALL, APPROVAL = "msg_approval", "call_rm", "appr_1"
TOOL = {"tool_call_id": CALL, "tool_name": "delete_file"}
ARGS = {"path": "/tmp/x"}


def _text(text_id: str, text: str) -> list[StreamEvent]:
    return [StreamTextStart(id=text_id), StreamTextDelta(id=text_id, delta=text), StreamTextEnd(id=text_id)]


# The engine's approval sequence: the call, the request, the end of the step and of the message.
APPROVAL_TURN = _stored(
    StreamStart(message_id=MESSAGE_ID),
    StreamStartStep(),
    StreamToolInputStart(**TOOL),
    StreamToolInputAvailable(**TOOL, input=ARGS),
    StreamToolApprovalRequest(approval_id=APPROVAL, **TOOL, input=ARGS),
    StreamFinishStep(),
    StreamFinish(finish_reason="tool-calls"),
)
# The continuation after the user's answer, in the same assistant message, in the engine's order: the call's
# output (``ToolRounds.resolve``) comes before the model's step.
DENIED_CONTINUATION = _stored(
    StreamStart(message_id=MESSAGE_ID),
    StreamToolOutputDenied(approval_id=APPROVAL, **TOOL, input=ARGS),
    StreamStartStep(),
    *_text("t_denied", "Not deleted."),
    StreamFinishStep(),
    StreamFinish(finish_reason="stop"),
)
APPROVED_CONTINUATION = _stored(
    StreamStart(message_id=MESSAGE_ID),
    approval_granted(APPROVAL, CALL, "delete_file", ARGS),
    StreamToolOutputAvailable(tool_call_id=CALL, output={"deleted": True}),
    StreamStartStep(),
    *_text("t_done", "Deleted."),
    StreamFinishStep(),
    StreamFinish(finish_reason="stop"),
)


def _answered(message: dict[str, Any], approved: bool) -> dict[str, Any]:
    """The message after `addToolApprovalResponse` (ai >= 6): what the client continues."""
    answered = json.loads(json.dumps(message))
    for part in _parts(answered, "dynamic-tool"):
        part["state"] = "approval-responded"
        part["approval"] = {**part["approval"], "approved": approved}
    return answered


@pytest.mark.parametrize("client", BY_LEVEL["v6"] + BY_LEVEL["v7"])
def test_v6_and_v7_clients_accept_the_approval_sequence_and_its_continuations(streams: _Streams, client: str):
    level = next(at for name, at in CLIENTS if name == client)
    asked = _play(streams, f"approval-{client}", APPROVAL_TURN, level=level, client=client)
    assert asked["ok"], asked["error"]
    assert [c["type"] for c in asked["chunks"]][4] == "tool-approval-request"
    (tool,) = _parts(asked["message"], "dynamic-tool")
    assert tool["state"] == "approval-requested" and tool["approval"]["id"] == APPROVAL
    assert tool["input"] == ARGS and not _parts(asked["message"], "data-approval")

    for approved, continuation, state in (
        (False, DENIED_CONTINUATION, "output-denied"),
        (True, APPROVED_CONTINUATION, "output-available"),
    ):
        name = f"continued-{approved}-{client}"
        answered = _answered(asked["message"], approved)
        out = _play(streams, name, continuation, level=level, client=client, message=answered)
        assert out["ok"], (approved, out["error"])
        (tool,) = _parts(out["message"], "dynamic-tool")
        assert out["message"]["id"] == MESSAGE_ID and tool["state"] == state
        assert tool["approval"] == {"id": APPROVAL, "approved": approved}
        assert _texts(out["message"]) == ("Deleted." if approved else "Not deleted.")
        assert "data-approval" not in [c["type"] for c in out["chunks"]]  # the v5 form is dropped at this level


@pytest.mark.parametrize("client", BY_LEVEL["v5"])
def test_v5_clients_accept_the_v5_form_of_an_approval(streams: _Streams, client: str):
    asked = _play(streams, f"approval-{client}", APPROVAL_TURN, level="v5", client=client)
    assert asked["ok"], asked["error"]
    (request,) = _parts(asked["message"], "data-approval")
    data = {"approvalId": APPROVAL, "toolCallId": CALL, "toolName": "delete_file", "input": ARGS}
    assert request["id"] == APPROVAL and request["data"] == {**data, "state": "requested"}
    (tool,) = _parts(asked["message"], "dynamic-tool")
    assert tool["state"] == "input-available"  # a server-run call (providerExecuted): useChat runs nothing

    denied = _play(
        streams, f"denied-{client}", DENIED_CONTINUATION, level="v5", client=client, message=asked["message"]
    )
    assert denied["ok"], denied["error"]
    (update,) = _parts(denied["message"], "data-approval")  # replaced, not added: same part id
    assert update["id"] == APPROVAL and update["data"] == {**data, "state": "denied"}
    (tool,) = _parts(denied["message"], "dynamic-tool")
    assert tool["state"] == "output-error" and tool["errorText"] == DENIED_TEXT
    assert _texts(denied["message"]) == "Not deleted."

    approved = _play(
        streams, f"ok-{client}", APPROVED_CONTINUATION, level="v5", client=client, message=asked["message"]
    )
    assert approved["ok"], approved["error"]
    (update,) = _parts(approved["message"], "data-approval")  # replaced: no request left to answer
    assert update["id"] == APPROVAL and update["data"] == {**data, "state": "approved"}
    (tool,) = _parts(approved["message"], "dynamic-tool")
    assert tool["state"] == "output-available" and tool["output"] == {"deleted": True}


@pytest.mark.parametrize("client", BY_LEVEL["v5"])
def test_v5_clients_reject_the_approval_chunks(streams: _Streams, client: str):
    """Why v5 sends a data part instead: the v6 form fails a 5.x chat."""
    asked = _play(streams, f"v6-approval-{client}", APPROVAL_TURN, level="v6", client=client)
    assert not asked["ok"] and '"type":"tool-approval-request"' in asked["error"], asked
    denied = _play(streams, f"v6-denied-{client}", DENIED_CONTINUATION[:3], level="v6", client=client)
    assert not denied["ok"] and '"type":"tool-output-denied"' in denied["error"], denied


@pytest.mark.parametrize(("client", "level"), CLIENTS)
def test_a_denial_needs_the_message_it_continues_at_every_level(streams: _Streams, client: str, level: str):
    """v5's tool-output-error and v6/v7's tool-output-denied both name a call of the message being continued: a
    client that does not hold that message (a fresh page that did not load it) fails the chat at every level, so
    the continuation must continue the assistant message that asked (the same `start.messageId`)."""
    out = _play(streams, f"orphan-denial-{client}", DENIED_CONTINUATION, level=level, client=client)
    assert not out["ok"], out
    assert CALL in out["error"] or "must be preceded by a tool-input-available" in out["error"], out


# One stream per 7-only chunk type; each is valid for ai 7 (it assembles the message).
SEVEN_ONLY = {
    "tool-approval-response": _stored(
        StreamStart(message_id="msg_auto"),
        StreamStartStep(),
        StreamToolInputAvailable(**TOOL, input=ARGS),
        StreamToolApprovalRequest(approval_id="appr_auto", **TOOL, input=ARGS, is_automatic=True),
        {"type": "tool-approval-response", "approvalId": "appr_auto", "approved": True},
        StreamToolOutputAvailable(tool_call_id=CALL, output={"deleted": True}),
        StreamFinishStep(),
        StreamFinish(finish_reason="stop"),
    ),
    "custom": _stored(StreamStart(message_id="msg_custom"), {"type": "custom", "kind": "acme.note"}, StreamFinish()),
    "reasoning-file": _stored(
        StreamStart(message_id="msg_file"),
        StreamStartStep(),
        {"type": "reasoning-file", "url": "data:text/plain;base64,aGk=", "mediaType": "text/plain"},
        StreamFinishStep(),
        StreamFinish(),
    ),
}


@pytest.mark.parametrize("kind", sorted(SEVEN_ONLY))
def test_7_only_chunks_are_accepted_by_ai7_rejected_by_ai6_and_left_out_below_v7(streams: _Streams, kind: str):
    stored = SEVEN_ONLY[kind]
    seven = _play(streams, f"seven-{kind}", stored, level="v7", client="ai7")
    assert seven["ok"], seven["error"]
    assert kind in {c["type"] for c in seven["chunks"]}
    six = _play(streams, f"six-gets-v7-{kind}", stored, level="v7", client="ai6")
    assert not six["ok"] and f'"type":"{kind}"' in six["error"], six
    for level in ("v6", "v5"):
        for client in BY_LEVEL[level]:
            out = _play(streams, f"{level}-{kind}-{client}", stored, level=level, client=client)
            assert out["ok"], (level, client, out["error"])
            assert kind not in {c["type"] for c in out["chunks"]}
    if kind == "tool-approval-response":  # an automatic approval: below v7 the call just gets its output
        (tool,) = _parts(seven["message"], "dynamic-tool")
        assert tool["state"] == "output-available" and tool["approval"]["isAutomatic"] is True
        (tool,) = _parts(out["message"], "dynamic-tool")
        assert tool["state"] == "output-available" and "approval" not in tool


def test_the_7x_client_runs_on_this_node():
    """ai 7.x declares Node >= 22; the oracle's self-test passing with it here proves it imports, validates, parses
    and assembles messages on the Node the tests run on (20 in CI)."""
    version = subprocess.run([_node(), "--version"], capture_output=True, text=True, check=True).stdout.strip()
    engines = json.loads((HERE / "node_modules" / "ai7" / "package.json").read_text())["engines"]["node"]
    result = subprocess.run(
        [_node(), str(HERE / "selftest.mjs"), "--ai", "ai7"], capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0 and "all passed" in result.stdout, result.stdout + result.stderr
    assert "# ai7 (npm:ai@7." in result.stdout, result.stdout
    print(f"ai 7 (engines: node {engines}) works on node {version}")


# A turn whose function died with a text open and a tool call still streaming its input (what its replay log holds),
# closed by another request (``chatcore.lapsed``): the chunks it appends must be accepted by every client.
DEAD_TURN_LOG = _stored(
    StreamStart(message_id="msg_dead"),
    StreamStartStep(),
    StreamTextStart(id="t_dead"),
    StreamTextDelta(id="t_dead", delta="Looking that up"),
    StreamToolInputStart(tool_call_id="call_dead", tool_name="get_weather"),
    StreamToolInputDelta(tool_call_id="call_dead", input_text_delta='{"city": "Ro'),
)


def _closed_dead_turn(*, stopped: bool) -> list[dict[str, Any]]:
    dead = DeadTurn()
    for chunk in DEAD_TURN_LOG:
        dead.read(encode_json(chunk))
    return DEAD_TURN_LOG + _stored(*dead.closing(stopped=stopped))


@pytest.mark.parametrize("stopped", [True, False], ids=["stopped", "crashed"])
@pytest.mark.parametrize(("client", "level"), CLIENTS)
def test_the_closing_chunks_of_a_dead_turn_are_accepted(streams: _Streams, client: str, level: str, stopped: bool):
    """A stop ends the dead turn as a stopped one (the client's chat stays usable); a crash ends it with the
    error chunk (the client reports that error, not a malformed stream). Either way the open text is ended and the
    call whose input was streaming gets its tool error, so the message the client keeps is complete."""
    log = _closed_dead_turn(stopped=stopped)
    out = _play(streams, f"dead-{client}-{stopped}", log, level=level, client=client)
    if stopped:
        assert out["ok"], out["error"]
    else:
        assert not out["ok"] and INTERRUPTED_TEXT in out["error"], out
    message = out["message"]
    assert message is not None and message["id"] == "msg_dead", out
    assert _texts(message) == "Looking that up"
    (call,) = [p for p in message["parts"] if p.get("toolCallId") == "call_dead"]
    assert call["state"] == "output-error" and call["errorText"] == STOPPED_TOOL_TEXT, call
