"""An offline, deterministic, OpenAI-compatible chat-completions server (no network, no model files).

The test suite and the local stack talk to it through the real ``openai`` client when no API key is configured::

    with OfflineLLM() as llm:
        client = openai.AsyncOpenAI(base_url=llm.base_url, api_key="offline")

or stand-alone: ``python -m local.offline_llm --port 8081 [--first-token-ms N] [--token-ms N]``.

Endpoints: ``POST /v1/chat/completions`` (``stream`` true or false, ``stream_options.include_usage``, ``tools``,
``tool_choice``, ``parallel_tool_calls``, ``max_tokens``/``max_completion_tokens``; any ``model`` is accepted and
echoed back) and ``GET /v1/models``.

How the answer is chosen, first match wins:

1. The last message is a ``tool`` message: a text answer quoting every trailing tool result,
   ``The tool current_time returned: <content>.`` (content truncated to 200 characters).
2. The last user message asks for a tool that the request lists in ``tools``: a tool call (streamed in fragments,
   ``finish_reason="tool_calls"``). Asking is either a directive ``[[tool:NAME {json args}]]`` (args optional,
   default ``{}``; several directives give parallel calls) or a natural trigger: a "time"/"clock" word calls
   ``current_time`` with ``{}``; ``calculate <expr>`` / ``compute <expr>`` calls ``calculator`` with
   ``{"expression": "<expr>"}``. A tool not in ``tools`` is never called; ``tool_choice`` "none", "required" and
   a named function are honoured.
3. ``[[long:N]]`` in the last user message: an answer of exactly N words.
4. A title request (a system or user message mentions "title", no tools, ``max_tokens`` <= 30): the first five
   words of the last user message (of the part after a ``Message:`` line when there is one), Title Case.
5. A summarisation request (a system message mentions "summar"): ``Summary: `` and the first sentence of each
   user message, capped at 400 characters.
6. Otherwise an echo: ``You said: "<last user text>". This is the offline model: ...``.

Fault directives in the last message (when it is a user message):

* ``[[fault:429]]`` / ``[[fault:500]]`` (any status 400-599): an OpenAI-style JSON error; 429 carries
  ``retry-after: 0``.
* ``[[fault:midstream]]``: a stream sends a few tokens, then ``data: {"error": {...}}`` and ends without
  ``[DONE]`` (a non-streamed request gets a 500).
* ``[[fault:hang]]``: headers, then nothing until the client gives up, the server stops, or ``hang_seconds``.
* ``[[fault:slow:MS]]``: the first token comes after MS milliseconds.

Tests queue the same faults programmatically (``llm.faults.push("429", times=2)``), one per request, before any
directive. Directives are removed from the text the answers quote. Usage is deterministic: prompt tokens are the
words of every message's content plus 4 per message; completion tokens are the emitted deltas.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import itertools
import json
import logging
import re
import signal
import socket
import string
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from local.server import tcp_listener

Json = dict[str, Any]

DEFAULT_MODELS = ("offline-chat", "offline-mini")
HANG_SECONDS = 300.0
MIDSTREAM_TOKENS = 3
MAX_LONG_WORDS = 100_000
OFFLINE_NOTE = "This is the offline model: set LLM_BASE_URL and LLM_API_KEY to use a real one."
MIDSTREAM_ERROR: Json = {"message": "offline model failure", "type": "server_error", "param": None, "code": None}

_POLL_SECONDS = 0.05
_FILLER = ("lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit", "sed", "do", "tempor")


# --------------------------------------------------------------------------------------------- strict JSON


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _loads(text: str) -> Any:
    return _DECODER.decode(text)


# --------------------------------------------------------------------------------------------- faults


@dataclass(frozen=True)
class Fault:
    """One simulated failure: an HTTP error ``status``, a ``midstream`` error, a ``hang``, or a ``slow`` start."""

    kind: Literal["status", "midstream", "hang", "slow"]
    status: int = 0
    delay_ms: int = 0


def parse_fault(spec: str) -> Fault:
    """``"429"``, ``"500"`` (any 400-599), ``"midstream"``, ``"hang"`` or ``"slow:MS"``."""
    spec = spec.strip().lower()
    if spec.isdigit() and 400 <= int(spec) <= 599:
        return Fault("status", status=int(spec))
    if spec in ("midstream", "hang"):
        return Fault("midstream" if spec == "midstream" else "hang")
    kind, _, value = spec.partition(":")
    if kind == "slow" and value.isdigit():
        return Fault("slow", delay_ms=int(value))
    raise ValueError(f"unknown fault {spec!r}: use 4xx/5xx, midstream, hang or slow:MS")


class FaultQueue:
    """Faults for the next requests, consumed one per chat-completion request, in order. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: deque[Fault] = deque()

    def push(self, spec: str, times: int = 1) -> None:
        if times < 1:
            raise ValueError("times must be >= 1")
        fault = parse_fault(spec)
        with self._lock:
            self._items.extend([fault] * times)

    def pop(self) -> Fault | None:
        with self._lock:
            return self._items.popleft() if self._items else None

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


# --------------------------------------------------------------------------------------------- directives


@dataclass(frozen=True)
class Directives:
    tools: tuple[tuple[str, str], ...]  # (name, JSON arguments)
    faults: tuple[Fault, ...]
    long_words: int | None
    text: str  # the text with every directive removed (line breaks kept)


_SIMPLE_DIRECTIVE = re.compile(r"\[\[(fault|long):([A-Za-z0-9:]+)\]\]")
_TOOL_HEAD = re.compile(r"\[\[tool:([A-Za-z0-9_.\-]+)\s*")


def _tool_directive_at(text: str, match: re.Match[str]) -> tuple[str, str, int] | None:
    """(name, arguments, end) of the ``[[tool:...]]`` starting at ``match``, or None when malformed."""
    pos = match.end()
    args: Any = {}
    if text.startswith("{", pos):
        try:
            args, pos = _DECODER.raw_decode(text, pos)
        except ValueError:
            return None
        if not isinstance(args, dict):
            return None
        pos += len(text[pos:]) - len(text[pos:].lstrip())
    if not text.startswith("]]", pos):
        return None
    return match.group(1), json.dumps(args, allow_nan=False), pos + 2


def _extract_tool_directives(text: str) -> tuple[list[tuple[str, str]], str]:
    calls: list[tuple[str, str]] = []
    kept: list[str] = []
    pos = 0
    for match in _TOOL_HEAD.finditer(text):
        if match.start() < pos:
            continue
        found = _tool_directive_at(text, match)
        if found is not None:
            calls.append(found[:2])
            kept.append(text[pos : match.start()])
            pos = found[2]
    kept.append(text[pos:])
    return calls, "".join(kept)


def parse_directives(text: str) -> Directives:
    tools, text = _extract_tool_directives(text)
    faults: list[Fault] = []
    long_words: int | None = None
    for kind, value in _SIMPLE_DIRECTIVE.findall(text):
        if kind == "long" and value.isdigit():
            long_words = min(int(value), MAX_LONG_WORDS)
        elif kind == "fault":
            try:
                faults.append(parse_fault(value))
            except ValueError:
                continue
    return Directives(tuple(tools), tuple(faults), long_words, _SIMPLE_DIRECTIVE.sub("", text).strip())


# --------------------------------------------------------------------------------------------- messages


def content_text(message: Json) -> str:
    """The text of a message: a string content, or the text parts of a list content."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [part.get("text") for part in content if isinstance(part, dict)]
        return "\n".join(part for part in parts if isinstance(part, str))
    return ""


def _texts(messages: Sequence[Json], roles: Iterable[str]) -> list[str]:
    wanted = set(roles)
    return [content_text(m) for m in messages if m.get("role") in wanted]


def _last_user_text(messages: Sequence[Json]) -> str:
    users = _texts(messages, ("user",))
    return users[-1] if users else ""


def _truncate(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit].rstrip() + "..."


def prompt_tokens(messages: Sequence[Json]) -> int:
    return sum(len(content_text(m).split()) + 4 for m in messages)


def split_tokens(text: str) -> list[str]:
    """Word-ish tokens, each with its leading whitespace, so that joining them gives back ``text``."""
    return re.findall(r"\s*\S+|\s+", text)


# --------------------------------------------------------------------------------------------- answers


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class Reply:
    text: str | None
    tool_calls: tuple[ToolCall, ...] = ()


def _tool_names(body: Json) -> list[str]:
    names: list[str] = []
    for tool in body.get("tools") or []:
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            names.append(function["name"])
    return names


def _tool_result_answer(messages: Sequence[Json]) -> str:
    names: dict[str, str] = {}
    for message in messages:
        for call in message.get("tool_calls") or []:
            if isinstance(call, dict) and isinstance(call.get("function"), dict):
                names[str(call.get("id"))] = str(call["function"].get("name", "tool"))
    trailing: list[Json] = []
    for message in reversed(messages):
        if message.get("role") != "tool":
            break
        trailing.insert(0, message)
    parts = []
    for message in trailing:
        name = names.get(str(message.get("tool_call_id")), str(message.get("name") or "tool"))
        parts.append(f"The tool {name} returned: {_truncate(content_text(message), 200)}.")
    return " ".join(parts)


def _natural_tool_requests(text: str, available: Sequence[str]) -> list[tuple[str, str]]:
    found: list[tuple[int, str, str]] = []
    if "current_time" in available and (time_word := re.search(r"\b(?:time|clock)\b", text, re.IGNORECASE)):
        found.append((time_word.start(), "current_time", "{}"))
    math = re.search(r"\b(?:calculate|compute)\s+([^\n]+)", text, re.IGNORECASE)
    if "calculator" in available and math:
        expression = math.group(1).strip().rstrip("?!.").strip()
        if expression:
            found.append((math.start(), "calculator", json.dumps({"expression": expression})))
    rename = re.search(r"\brename (?:this|the) (?:chat|conversation) to\s+([^\n]+)", text, re.IGNORECASE)
    if "rename_session" in available and rename:
        title = rename.group(1).strip().strip("\"'").rstrip("?!.").strip()
        if title:
            found.append((rename.start(), "rename_session", json.dumps({"title": title[:200]})))
    return [(name, args) for _, name, args in sorted(found)]


def _forced_tool(body: Json, available: Sequence[str]) -> str | None:
    """The tool ``tool_choice`` forces when the prompt asks for none, if any."""
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        return choice["function"].get("name") if choice["function"].get("name") in available else None
    if choice == "required" and available:
        return available[0]
    return None


def _allowed_tools(body: Json) -> list[str]:
    available = _tool_names(body)
    choice = body.get("tool_choice")
    if choice == "none":
        return []
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        return [name for name in available if name == choice["function"].get("name")]
    return available


def _tool_call_id(messages: Sequence[Json], index: int, name: str, arguments: str) -> str:
    digest = hashlib.sha256(f"{len(messages)}|{index}|{name}|{arguments}".encode()).hexdigest()
    return f"call_{digest[:24]}"


def plan_tool_calls(body: Json, directives: Directives) -> tuple[ToolCall, ...]:
    available = _allowed_tools(body)
    requested = [(name, args) for name, args in directives.tools if name in available]
    if not requested:
        requested = _natural_tool_requests(directives.text, available)
    if not requested and (forced := _forced_tool(body, available)):
        requested = [(forced, "{}")]
    if body.get("parallel_tool_calls") is False:
        requested = requested[:1]
    messages = body["messages"]
    return tuple(
        ToolCall(_tool_call_id(messages, i, name, args), name, args) for i, (name, args) in enumerate(requested)
    )


def _max_tokens(body: Json) -> int | None:
    for key in ("max_tokens", "max_completion_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _is_title_request(body: Json) -> bool:
    limit = _max_tokens(body)
    if body.get("tools") or limit is None or limit > 30:
        return False
    return any("title" in text.lower() for text in _texts(body["messages"], ("system", "developer", "user")))


def title_for(text: str) -> str:
    marker = re.search(r"(?im)^[ \t]*message:[ \t]*", text)
    words = (text[marker.end() :] if marker else text).split()[:5]
    title = " ".join(word[:1].upper() + word[1:] for word in words)
    return title.strip(string.punctuation + string.whitespace) or "New Chat"


def _first_sentence(text: str) -> str:
    flat = " ".join(text.split())
    match = re.match(r".+?[.!?](?=\s|$)", flat)
    return match.group(0) if match else flat


def summary_for(messages: Sequence[Json]) -> str:
    sentences = [_first_sentence(parse_directives(text).text) for text in _texts(messages, ("user",))]
    condensed = " ".join(s for s in sentences if s)[:400].rstrip()
    return f"Summary: {condensed or 'nothing to summarise.'}"


def long_answer(words: int) -> str:
    chosen = [_FILLER[i % len(_FILLER)] for i in range(words)]
    if not chosen:
        return ""
    chosen[0] = chosen[0].capitalize()
    return " ".join(chosen) + "."


def echo_answer(text: str) -> str:
    return f'You said: "{_truncate(text, 200)}". {OFFLINE_NOTE}'


def plan_reply(body: Json, directives: Directives) -> Reply:
    """What the model answers to a (validated) request; see the module docstring for the rules."""
    messages: list[Json] = body["messages"]
    if messages[-1].get("role") == "tool":
        return Reply(_tool_result_answer(messages))
    calls = plan_tool_calls(body, directives)
    if calls:
        return Reply(None, calls)
    if directives.long_words is not None:
        return Reply(long_answer(directives.long_words))
    if _is_title_request(body):
        return Reply(title_for(parse_directives(_last_user_text(messages)).text))
    if any("summar" in text.lower() for text in _texts(messages, ("system", "developer"))):
        return Reply(summary_for(messages))
    return Reply(echo_answer(parse_directives(_last_user_text(messages)).text))


# --------------------------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class Completion:
    """A reply rendered as OpenAI wire deltas, plus what the non-streamed form needs."""

    deltas: tuple[Json, ...]  # everything between the role chunk and the final chunk
    message: Json
    finish_reason: str
    usage: Json


def _argument_pieces(arguments: str) -> list[str]:
    count = max(2, min(4, len(arguments) // 8))
    size = -(-len(arguments) // count)
    return [arguments[i : i + size] for i in range(0, len(arguments), size)]


def _tool_call_deltas(calls: Sequence[ToolCall]) -> list[Json]:
    deltas: list[Json] = []
    for index, call in enumerate(calls):
        head = {"index": index, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}
        deltas.append({"tool_calls": [head]})
        for piece in _argument_pieces(call.arguments):
            deltas.append({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
    return deltas


def render(body: Json, reply: Reply) -> Completion:
    message: Json = {"role": "assistant", "content": reply.text, "refusal": None}
    if reply.tool_calls:
        deltas = _tool_call_deltas(reply.tool_calls)
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in reply.tool_calls
        ]
        finish_reason = "tool_calls"
    else:
        tokens = split_tokens(reply.text or "")
        limit = _max_tokens(body)
        finish_reason = "stop"
        if limit is not None and 0 <= limit < len(tokens):
            tokens, finish_reason = tokens[:limit], "length"
        deltas = [{"content": token} for token in tokens]
        message["content"] = "".join(tokens)
    prompt = prompt_tokens(body["messages"])
    usage = {"prompt_tokens": prompt, "completion_tokens": len(deltas), "total_tokens": prompt + len(deltas)}
    return Completion(tuple(deltas), message, finish_reason, usage)


class _Envelope:
    """The fields every chunk of one response shares."""

    def __init__(self, body: Json, include_usage: bool) -> None:
        digest = hashlib.sha256(_dumps(body).encode()).hexdigest()
        self.id = f"chatcmpl-{digest[:24]}"
        self.created = int(time.time())
        self.model = str(body["model"])
        self.include_usage = include_usage

    def chunk(self, delta: Json, finish_reason: str | None = None) -> Json:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return self._wrap("chat.completion.chunk", [choice])

    def usage_chunk(self, usage: Json) -> Json:
        return {**self._wrap("chat.completion.chunk", []), "usage": usage}

    def completion(self, rendered: Completion) -> Json:
        choice = {"index": 0, "message": rendered.message, "logprobs": None, "finish_reason": rendered.finish_reason}
        return {**self._wrap("chat.completion", [choice]), "usage": rendered.usage}

    def _wrap(self, kind: str, choices: list[Json]) -> Json:
        wrapped: Json = {
            "id": self.id,
            "object": kind,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_offline",
            "choices": choices,
        }
        if self.include_usage:
            wrapped["usage"] = None
        return wrapped


def stream_chunks(body: Json, rendered: Completion) -> list[Json]:
    """Every chunk of a streamed answer: role, deltas, finish, and the usage chunk when asked for."""
    options = body.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    envelope = _Envelope(body, include_usage)
    role: Json = {"role": "assistant", "content": None if "tool_calls" in rendered.message else "", "refusal": None}
    chunks = [envelope.chunk(role)]
    chunks += [envelope.chunk(delta) for delta in rendered.deltas]
    chunks.append(envelope.chunk({}, rendered.finish_reason))
    if include_usage:
        chunks.append(envelope.usage_chunk(rendered.usage))
    return chunks


def _sse(payload: Json) -> bytes:
    return f"data: {_dumps(payload)}\n\n".encode()


# --------------------------------------------------------------------------------------------- HTTP errors


def error_body(message: str, kind: str, param: str | None = None, code: str | None = None) -> Json:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _status_error(status: int, headers: dict[str, str]) -> Response:
    if status == 429:
        body = error_body(
            "Rate limit reached for the offline model (simulated).", "requests", code="rate_limit_exceeded"
        )
        return JSONResponse(body, status_code=429, headers={**headers, "retry-after": "0"})
    if status >= 500:
        message = "The server had an error while processing your request (offline model, simulated)."
        return JSONResponse(error_body(message, "server_error"), status_code=status, headers=headers)
    body = error_body(f"Simulated error {status} from the offline model.", "invalid_request_error")
    return JSONResponse(body, status_code=status, headers=headers)


def _bad_request(message: str, param: str | None, headers: dict[str, str]) -> Response:
    return JSONResponse(error_body(message, "invalid_request_error", param), status_code=400, headers=headers)


def validate(body: Any) -> tuple[str, str | None] | None:
    """(message, param) describing why ``body`` is not a chat-completion request, or None when it is."""
    if not isinstance(body, dict):
        return "The request body must be a JSON object.", None
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "you must provide a model parameter", "model"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty array", "messages"
    if not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
        return "every message must be an object with a 'role'", "messages"
    if not isinstance(body.get("tools", []), list | None):
        return "'tools' must be an array", "tools"
    return None


# --------------------------------------------------------------------------------------------- the server


class OfflineLLM:
    """The server, its fault queue and its request log. ``start()``/``stop()`` run it in a background thread.

    ``first_token_delay`` and ``token_delay`` (seconds) and ``hang_seconds`` may be changed while it runs.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        first_token_delay: float = 0.0,
        token_delay: float = 0.0,
        models: Sequence[str] = DEFAULT_MODELS,
        hang_seconds: float = HANG_SECONDS,
    ) -> None:
        self.host = host
        self.port = port
        self.first_token_delay = first_token_delay
        self.token_delay = token_delay
        self.hang_seconds = hang_seconds
        self.models = tuple(models)
        self.faults = FaultQueue()
        self.requests: list[Json] = []
        # Request bodies whose streamed answer the client closed before its end (a cancelled request).
        self.cut_streams: list[Json] = []
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat_completions, methods=["POST"]),
                Route("/v1/models", self._list_models, methods=["GET"]),
            ]
        )
        self._stopping = threading.Event()  # set by stop(): pauses and hangs end at once
        self._lock = threading.Lock()
        self._wakers: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._sequence = itertools.count(1)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    # ----- lifecycle

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def start(self, timeout: float = 10.0) -> Self:
        """Serve in a background thread; returns once connections are accepted."""
        if self._thread is not None:
            raise RuntimeError("the offline LLM is already running")
        self._stopping.clear()
        self._socket = tcp_listener(self.host, self.port)
        self.port = self._socket.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, args=([self._socket],), name="offline-llm", daemon=True
        )
        self._thread.start()
        self._wait_started(timeout)
        return self

    def _wait_started(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not (self._server is not None and self._server.started):
            if self._thread is None or not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the offline LLM did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop serving: ends hanging responses and joins the thread (bounded). Safe to call twice."""
        server, thread, sock = self._server, self._thread, self._socket
        self._server = self._thread = self._socket = None
        self._wake_sleepers()
        if server is not None and thread is not None:
            server.should_exit = True
            thread.join(timeout=5)
            if thread.is_alive():
                server.force_exit = True
                thread.join(timeout=5)
        if sock is not None:
            sock.close()

    def reset(self) -> None:
        """Forget recorded requests and queued faults."""
        self.requests.clear()
        self.faults.clear()

    def __enter__(self) -> Self:
        return self if self._thread is not None else self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ----- endpoints

    async def _list_models(self, request: Request) -> Response:
        data = [{"id": model, "object": "model", "created": 0, "owned_by": "offline"} for model in self.models]
        return JSONResponse({"object": "list", "data": data})

    async def _chat_completions(self, request: Request) -> Response:
        headers = {"x-request-id": f"req_offline_{next(self._sequence)}"}
        try:
            body = _loads((await request.body()).decode())
        except ValueError:
            return _bad_request("The request body is not valid JSON.", None, headers)
        if isinstance(body, dict):
            self.requests.append(body)
        problem = validate(body)
        if problem is not None:
            return _bad_request(*problem, headers)
        directives = self._directives(body)
        fault, first_delay = self._faults_for(directives)
        if fault is not None and fault.kind == "status":
            return _status_error(fault.status, headers)
        if fault is not None and fault.kind == "hang":
            media = "text/event-stream" if body.get("stream") else "application/json"
            return StreamingResponse(self._hang(), media_type=media, headers=headers)
        rendered = render(body, plan_reply(body, directives))
        if body.get("stream") is True:
            chunks = stream_chunks(body, rendered)
            midstream = fault is not None and fault.kind == "midstream"
            stream = self._stream(body, chunks, len(rendered.deltas), first_delay, midstream)
            return StreamingResponse(stream, media_type="text/event-stream", headers=headers)
        if fault is not None and fault.kind == "midstream":
            return _status_error(500, headers)
        await self._pause(first_delay + self.token_delay * max(0, len(rendered.deltas) - 1))
        return JSONResponse(_Envelope(body, include_usage=False).completion(rendered), headers=headers)

    @staticmethod
    def _directives(body: Json) -> Directives:
        last = body["messages"][-1]
        return parse_directives(content_text(last) if last.get("role") == "user" else "")

    def _faults_for(self, directives: Directives) -> tuple[Fault | None, float]:
        """The failure to simulate (queued first, then directives) and the delay before the first token."""
        candidates = [f for f in (self.faults.pop(), *directives.faults) if f is not None]
        failure = next((f for f in candidates if f.kind != "slow"), None)
        slow = next((f for f in candidates if f.kind == "slow"), None)
        return failure, slow.delay_ms / 1000 if slow is not None else self.first_token_delay

    # ----- timing

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds``, cut short when the server stops."""
        if seconds <= 0:
            return
        waker = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            if self._stopping.is_set():
                return
            self._wakers.add(waker)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waker[1].wait(), seconds)
        finally:
            with self._lock:
                self._wakers.discard(waker)

    def _wake_sleepers(self) -> None:
        with self._lock:
            self._stopping.set()
            wakers = list(self._wakers)
        for loop, event in wakers:
            with contextlib.suppress(RuntimeError):  # that loop has closed already
                loop.call_soon_threadsafe(event.set)

    async def _hang(self) -> AsyncIterator[bytes]:
        await self._pause(self.hang_seconds)
        yield b""

    async def _stream(
        self, body: Json, chunks: list[Json], deltas: int, first_delay: float, midstream: bool
    ) -> AsyncIterator[bytes]:
        """SSE events: ``chunks[0]`` is the role chunk, the next ``deltas`` are tokens/fragments. A stream the
        client closes before its end is recorded in ``cut_streams``."""
        finished = False
        try:
            async for event in self._events(chunks, deltas, first_delay, midstream):
                yield event
            finished = True
        finally:
            if not finished:
                self.cut_streams.append(body)

    async def _events(
        self, chunks: list[Json], deltas: int, first_delay: float, midstream: bool
    ) -> AsyncIterator[bytes]:
        cut = 1 + min(MIDSTREAM_TOKENS, deltas) if midstream else -1
        await self._pause(first_delay)
        for index, chunk in enumerate(chunks):
            if index == cut:
                yield _sse({"error": MIDSTREAM_ERROR})
                return
            if 1 < index <= deltas:
                await self._pause(self.token_delay)
            yield _sse(chunk)
        yield b"data: [DONE]\n\n"


# --------------------------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m local.offline_llm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--first-token-ms", type=int, default=0, help="delay before the first token")
    parser.add_argument("--token-ms", type=int, default=0, help="delay between tokens")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    llm = OfflineLLM(
        host=args.host, port=args.port, first_token_delay=args.first_token_ms / 1000, token_delay=args.token_ms / 1000
    ).start()
    print(f"Offline LLM (OpenAI-compatible) at {llm.base_url} - any API key; Ctrl-C stops.", flush=True)
    try:
        while not done.wait(timeout=1.0):
            pass
    finally:
        llm.stop()  # also ends hanging responses at once


if __name__ == "__main__":
    main()
