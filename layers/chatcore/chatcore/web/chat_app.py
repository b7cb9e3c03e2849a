"""The chat HTTP API (ChatFunction): AI SDK UI message streams over SSE.

    POST /chat                    the AI SDK transport body {id, messages, trigger, messageId}; id = session id,
                                  created for the caller on first use. Send, resend, edit and regenerate are
                                  read by the decision table of ``chatcore.intents``
    POST /sessions/{id}/stream    {"message": "..."} for curl
    GET  /chat/{id}/stream        resume: full replay of the active turn, then live until it ends (204: none);
                                  Last-Event-ID continues after that replay-log entry. A dead turn (its lease
                                  lapsed) is closed first, so the replay ends
    POST /chat/{id}/stop          stop the active turn; the partial answer is kept (202 stopping; 200 stopped
                                  when the turn was dead and is closed now; 503 when it cannot be reached)
    POST /chat/{id}/approvals/{approval_id}   {"approved", "reason"?}: answer a tool approval; streams the
                                  continuation of the message that asked (like POST /chat)
    GET  /health, GET /chat/openapi.json   no token

Every input error is a JSON 4xx before any stream starts. The streams speak the protocol level of
``UI_STREAM_PROTOCOL``, or of the request's ``x-ui-stream-protocol`` header (``v5``, ``v6``, ``v7``).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any, Literal

import anyio
from pydantic import BaseModel, ConfigDict, Field
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from chatcore import ports
from chatcore.approvals import ApprovalAnswer
from chatcore.auth import Authenticator
from chatcore.config import Settings
from chatcore.errors import BadRequest, ChatError, ValidationFailed
from chatcore.intents import ApprovalAnswers, Intent, NewMessage, RegenerateAnswer
from chatcore.models import NOT_BLANK_PATTERN, is_valid_session_id
from chatcore.stream import DONE, LEVEL_NAMES, LEVELS, PING, STREAM_HEADERS, ProtocolLevel, protocol_level, sse
from chatcore.streams import Chunk, Frame, Ping, follow_live, follow_log, open_resume
from chatcore.turn_types import ExistingTurn, TurnHandle
from chatcore.turns import ChatEngine
from chatcore.web.api import json_api
from chatcore.web.inputs import parse_model, read_json, session_id_param
from chatcore.web.misconfigured import READY_PATH, build_or_refuse, ready

_ENTRY_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
_CLIENT_ID = re.compile(r"^[\w.:-]{1,128}$")
_NOT_BLANK = re.compile(NOT_BLANK_PATTERN)
NO_RESUME_HEADER = "x-resume-unavailable"
LEVEL_HEADER = "x-ui-stream-protocol"


class _Lenient(BaseModel):
    # The AI SDK may add fields (and front ends add their own body fields): ignore what we do not use.
    model_config = ConfigDict(extra="ignore", defer_build=True)


class UIApproval(_Lenient):
    id: str = Field(min_length=1, max_length=128)
    approved: bool | None = None
    reason: str | None = Field(default=None, max_length=2000)


class UIPart(_Lenient):
    type: str
    text: str | None = None
    tool_call_id: str | None = Field(default=None, alias="toolCallId", max_length=256)
    state: str | None = None
    approval: UIApproval | None = None


class UIMessage(_Lenient):
    id: str = ""
    role: Literal["user", "assistant", "system"]
    parts: list[UIPart] = Field(default_factory=list, max_length=100)


class ChatRequest(_Lenient):
    id: str
    messages: list[UIMessage] = Field(min_length=1, max_length=10_000)
    trigger: Literal["submit-message", "regenerate-message"] = "submit-message"
    message_id: str | None = Field(default=None, alias="messageId")


class ApprovalIn(_Lenient):
    """The answer; the AI SDK transport's own fields (id, messages, trigger, ...) are ignored, so a ``useChat``
    transport pointed at this URL works as well as curl."""

    approved: bool
    reason: str | None = Field(default=None, max_length=2000)


class SimpleMessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)
    message: str


def _intent(request: ChatRequest, max_chars: int) -> Intent:
    """What the POST asks for; the decision over the stored session is ``chatcore.intents.plan_turn``."""
    if request.trigger == "regenerate-message":
        # useChat omits messageId when regenerate() has no argument: the last answer.
        return RegenerateAnswer(_checked_id(request.message_id, ["messageId"]))
    last = request.messages[-1]
    if last.role == "assistant":
        answers = _approval_answers(last)
        if answers:
            return ApprovalAnswers(answers)
    if last.role != "user":
        raise ValidationFailed(
            "the last message must be the user's (or an answer to a tool approval)",
            details=[{"loc": ["messages"], "msg": "no user message"}],
        )
    text = "".join(part.text or "" for part in last.parts if part.type == "text")
    return NewMessage(_check_text(text, max_chars), _checked_id(last.id or None, ["messages", "id"]))


def _approval_answers(message: UIMessage) -> list[ApprovalAnswer]:
    """The tool parts ``useChat`` sends in state ``approval-responded``: only their approval id, decision and
    reason are read (the tool call itself is taken from storage)."""
    answers: list[ApprovalAnswer] = []
    for part in message.parts:
        if part.state != "approval-responded" or part.approval is None or part.approval.approved is None:
            continue
        approval_id = _checked_id(part.approval.id, ["messages", "parts", "approval", "id"])
        assert approval_id is not None
        reason = _clean_reason(part.approval.reason)
        answers.append(ApprovalAnswer(approval_id, part.approval.approved, reason, part.tool_call_id))
    return answers


def _clean_reason(reason: str | None) -> str | None:
    """A reason as given, stripped; none when blank. Lone surrogates never get here: ``read_json`` refuses them."""
    if reason is None or not reason.strip():
        return None
    return reason.strip()


def _checked_id(value: str | None, loc: list[str]) -> str | None:
    if value is not None and not _CLIENT_ID.fullmatch(value):
        raise ValidationFailed("invalid message id", details=[{"loc": loc, "msg": "invalid id"}])
    return value


def _check_text(text: str, max_chars: int) -> str:
    if not _NOT_BLANK.search(text):
        raise ValidationFailed("the message is empty", details=[{"loc": ["message"], "msg": "empty"}])
    if len(text) > max_chars:
        raise ValidationFailed(
            "the message is too long", details=[{"loc": ["message"], "msg": f"at most {max_chars} characters"}]
        )
    return text


class ChatApi:
    def __init__(self, engine: ChatEngine, authenticator: Authenticator, settings: Settings) -> None:
        self.engine = engine
        self.auth = authenticator
        self.settings = settings

    @property
    def replay(self) -> ports.ReplayLog:
        return self.engine.deps.replay

    async def _user(self, request: Request) -> str | None:
        header = request.headers.get("authorization")
        if header is None and self.settings.allow_anonymous:
            return None
        return (await self.auth.authenticate(header)).user_id

    def _level(self, request: Request) -> ProtocolLevel:
        header = request.headers.get(LEVEL_HEADER)
        if header is None:
            return LEVELS[self.settings.ui_stream_protocol]
        level = protocol_level(header)
        if level is None:
            raise BadRequest(f"invalid {LEVEL_HEADER} header: expected one of {', '.join(LEVEL_NAMES)}")
        return level

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "cache": "enabled" if self.replay.enabled else "disabled"})

    async def openapi(self, request: Request) -> Response:
        from chatcore.web.openapi import chat_openapi  # built on first request: no cold-start cost

        return JSONResponse(chat_openapi(self.settings.max_message_chars, self.settings.allow_anonymous))

    async def chat(self, request: Request) -> Response:
        user_id = await self._user(request)
        level = self._level(request)
        body = parse_model(ChatRequest, await read_json(request, max_bytes=self.settings.max_body_bytes * 8))
        if not is_valid_session_id(body.id):
            raise BadRequest("invalid chat id")
        intent = _intent(body, self.settings.max_message_chars)
        if isinstance(intent, ApprovalAnswers):
            answered = await self.engine.answer_approvals(body.id, intent.answers, user_id=user_id)
            return self._respond(answered, level)
        # A regenerate needs an answer to replace: it never creates the session.
        create = isinstance(intent, NewMessage)
        started = await self.engine.submit(body.id, intent, user_id=user_id, create=create)
        return self._respond(started, level)

    async def approve(self, request: Request) -> Response:
        user_id = await self._user(request)
        level = self._level(request)
        session_id = session_id_param(request)
        approval_id = _checked_id(str(request.path_params["approval_id"]), ["approval_id"])
        assert approval_id is not None
        body = parse_model(ApprovalIn, await read_json(request, max_bytes=self.settings.max_body_bytes))
        answer = ApprovalAnswer(approval_id, body.approved, _clean_reason(body.reason))
        answered = await self.engine.answer_approvals(session_id, [answer], user_id=user_id)
        return self._respond(answered, level)

    async def simple_stream(self, request: Request) -> Response:
        user_id = await self._user(request)
        level = self._level(request)
        session_id = session_id_param(request)
        body = parse_model(SimpleMessageIn, await read_json(request, max_bytes=self.settings.max_body_bytes))
        text = _check_text(body.message, self.settings.max_message_chars)
        started = await self.engine.start_turn(session_id, text, user_id=user_id)
        return self._respond(started, level)

    async def resume(self, request: Request) -> Response:
        user_id = await self._user(request)
        level = self._level(request)
        session_id = session_id_param(request)
        after = request.headers.get("last-event-id")
        if after is not None and not _ENTRY_ID.fullmatch(after):
            raise BadRequest("invalid Last-Event-ID")
        resume = await open_resume(self.engine.deps.sessions, self.replay, session_id, user_id)
        if resume.turn_id is None:
            return Response(status_code=204, headers={NO_RESUME_HEADER: resume.reason} if resume.reason else None)
        return self._stream(self._follow_log(session_id, resume.turn_id, after or "0-0", level))

    async def stop(self, request: Request) -> Response:
        user_id = await self._user(request)
        session_id = session_id_param(request)
        stopping = await self.engine.stop(session_id, user_id)
        if stopping is None:
            return Response(status_code=204)
        if stopping.closed:
            return JSONResponse({"status": "stopped", "turn_id": stopping.turn_id}, status_code=200)
        return JSONResponse({"status": "stopping", "turn_id": stopping.turn_id}, status_code=202)

    # -- streaming ------------------------------------------------------------------------------------------

    def _respond(self, started: TurnHandle | ExistingTurn, level: ProtocolLevel) -> Response:
        if isinstance(started, ExistingTurn):
            return self._stream(self._follow_log(started.session_id, started.turn_id, "0-0", level))
        return self._stream(follow_live(started, level=level, heartbeat_seconds=self.settings.heartbeat_seconds))

    async def _follow_log(
        self, session_id: str, turn_id: str, after: str, level: ProtocolLevel
    ) -> AsyncIterator[Frame]:
        """The turn's replay log; a turn found dead, first or while the log is idle, is closed, so the follower gets
        its end instead of pings until ``RESUME_IDLE_SECONDS``: at once when its lease lapsed, and after a lease and
        a title's wait without news when another turn took that lease before anything closed it."""
        settings = self.settings
        abandoned_after = settings.turn_lease_seconds + settings.title_timeout_seconds

        async def close_if_dead(idle: float = 0.0) -> None:
            with contextlib.suppress(ChatError):
                if not await self.engine.close_lapsed(session_id, turn_id, stopped=False) and idle >= abandoned_after:
                    await self.engine.close_abandoned(session_id, turn_id)

        # Checked beside the replay, not before it: a resume of a live turn does not wait for this write.
        first_check = asyncio.create_task(close_if_dead())
        frames = follow_log(
            self.replay,
            turn_id,
            after,
            level=level,
            heartbeat_seconds=settings.heartbeat_seconds,
            idle_seconds=settings.resume_idle_seconds,
            on_idle=close_if_dead,
        )
        try:
            async for frame in frames:
                yield frame
        finally:
            with anyio.CancelScope(shield=True):  # a client gone away cancels the body; the check still ends here
                await first_check

    @staticmethod
    def _stream(frames: AsyncIterator[Frame]) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            held: list[bytes] = []  # chunks ready together go out in one write
            async for frame in frames:
                if isinstance(frame, Chunk):
                    held.append(sse(frame.json, event_id=frame.event_id))
                    if frame.more:
                        continue
                else:
                    held.append(PING if isinstance(frame, Ping) else DONE)
                yield b"".join(held)
                held.clear()
            if held:
                yield b"".join(held)

        return StreamingResponse(body(), headers=STREAM_HEADERS)


def create_chat_app(engine: ChatEngine, authenticator: Authenticator, settings: Settings) -> Starlette:
    api = ChatApi(engine, authenticator, settings)
    routes = [
        Route("/health", api.health, methods=["GET"]),
        Route(READY_PATH, ready, methods=["GET"]),
        Route("/chat/openapi.json", api.openapi, methods=["GET"]),
        Route("/chat", api.chat, methods=["POST"]),
        Route("/chat/{session_id}/stream", api.resume, methods=["GET"]),
        Route("/chat/{session_id}/stop", api.stop, methods=["POST"]),
        Route("/chat/{session_id}/approvals/{approval_id}", api.approve, methods=["POST"]),
        Route("/sessions/{session_id}/stream", api.simple_stream, methods=["POST"]),
    ]
    return json_api(routes)


def default_chat_app() -> Starlette:
    from chatcore.container import default_container
    from chatcore.llm import require_llm_key

    container = default_container()
    require_llm_key(container.settings)
    return create_chat_app(container.engine, Authenticator(container.settings), container.settings)


def lazy(factory: Any) -> Any:
    """An ASGI app that builds the real one on its first request (settings are read at run time); a configuration
    error gives the misconfigured app (503 naming the setting, ``/ready`` still 200)."""
    app: Any = None

    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal app
        if app is None:
            app = build_or_refuse(factory)
        await app(scope, receive, send)

    return asgi
