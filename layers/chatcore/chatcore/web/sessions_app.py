"""The sessions HTTP API (SessionsFunction): session CRUD for the authenticated user.

    POST   /sessions                                         create
    GET    /sessions                                         list, newest first (?limit, cursor, status, chat_type)
    POST   /sessions/batch-delete                            delete several
    GET    /sessions/{id}                                    read
    PATCH  /sessions/{id}                                    rename / retype / archive / re-tag
    DELETE /sessions/{id}                                    delete with every item of the session
    GET    /sessions/{id}/messages                           page the active branch, oldest first; the assistant
                                                             messages carry the owner's feedback on their answer
                                                             (``?branch=all``: every message of every branch by
                                                             seq, each naming its parent)
    GET    /sessions/{id}/messages/{message_id}/versions     the versions of a message (regenerated answers,
                                                             edits); message_id = a message, turn or client id
    PUT    /sessions/{id}/branch                             {"message_id"}: make that version active (the
                                                             newest branch under it); 409 while a reply runs
    PUT    /sessions/{id}/messages/{message_id}/feedback     rate an answer {rating: up|down, comment?}: one per
                                                             answer, a PUT replaces it; message_id = the turn id
                                                             (the stream's start.messageId); counted as the
                                                             ``Feedback`` metric by ``rating``
    DELETE /sessions/{id}/messages/{message_id}/feedback     remove that rating
    GET    /users/me/context                                 what the assistant knows about the caller
                                                             (``{context: "", version: 0}`` when nothing is stored)
    PUT    /users/me/context                                 {context, version?}: "" clears it; with ``version``
                                                             (from GET) a stale write is 409 and writes nothing
    GET    /health, GET /sessions/openapi.json               no token

Every other route needs a bearer token; the caller only ever reaches their own data (another user's session is
404). Routes are disjoint from the chat app's, so the local stack serves both on one origin.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from chatcore.auth import Authenticator, Principal
from chatcore.config import Settings
from chatcore.errors import BadRequest, NotFound, ValidationFailed
from chatcore.models import is_valid_chat_type
from chatcore.sessions import SessionService
from chatcore.user_context import UserContextService
from chatcore.web.api import json_api
from chatcore.web.inputs import check_text, int_query, known_query, parse_model, read_json, session_id_param
from chatcore.web.openapi import sessions_openapi
from chatcore.web.schemas import (
    MAX_COMMENT_CHARS,
    MESSAGE_REF_PATTERN,
    CreateSessionIn,
    DeleteSessionsIn,
    DeleteSessionsOut,
    FeedbackIn,
    FeedbackOut,
    MessageListOut,
    MessageOut,
    SessionListOut,
    SessionOut,
    SwitchBranchIn,
    UpdateSessionIn,
    UserContextIn,
    UserContextOut,
    VersionsOut,
    dump,
)

MESSAGE_REF = re.compile(MESSAGE_REF_PATTERN)


def message_ref(request: Request) -> str:
    """The ``{message_id}`` of a path: a message id, an answer's turn id or a user message's client id."""
    value = str(request.path_params["message_id"])
    if not MESSAGE_REF.fullmatch(value):
        raise BadRequest("invalid message id")
    return value


CURSOR = re.compile(r"^[A-Za-z0-9_-]{1,512}$")


def cursor_param(request: Request) -> str | None:
    """The opaque cursor of a page as it was given (unpadded base64url): an empty one, or one with characters a
    base64 decoder would skip, came from no page."""
    cursor = request.query_params.get("cursor")
    if cursor is not None and not CURSOR.fullmatch(cursor):
        raise BadRequest("invalid cursor")
    return cursor


def clean_title(title: str, max_chars: int) -> str:
    """The title stripped, once it is checked as sent (what the OpenAPI document says): at most ``max_chars``
    characters and no control or format characters."""
    if len(title) > max_chars:
        raise ValidationFailed(
            "invalid request body", details=[{"loc": ["title"], "msg": f"at most {max_chars} characters"}]
        )
    if any(unicodedata.category(char) in ("Cc", "Cf") for char in title):
        raise ValidationFailed(
            "invalid request body", details=[{"loc": ["title"], "msg": "control characters are not allowed"}]
        )
    return title.strip()


def check_metadata(metadata: dict[str, Any], max_bytes: int) -> None:
    size = len(json.dumps(metadata, separators=(",", ":"), ensure_ascii=False).encode())
    if size > max_bytes:
        raise ValidationFailed(
            "invalid request body",
            details=[{"loc": ["metadata"], "msg": f"at most {max_bytes} bytes as JSON"}],
        )


class SessionsApi:
    def __init__(
        self, service: SessionService, authenticator: Authenticator, settings: Settings, contexts: UserContextService
    ) -> None:
        self.service = service
        self.auth = authenticator
        self.settings = settings
        self.contexts = contexts

    async def _principal(self, request: Request) -> Principal:
        return await self.auth.authenticate(request.headers.get("authorization"))

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "cache": "enabled" if self.service.cache.enabled else "disabled"})

    async def openapi(self, request: Request) -> Response:
        settings = self.settings
        limits = (settings.max_title_chars, settings.max_metadata_bytes, settings.user_context_max_chars)
        return JSONResponse(sessions_openapi(*limits))

    async def create(self, request: Request) -> Response:
        principal = await self._principal(request)
        body = parse_model(
            CreateSessionIn,
            await read_json(request, max_bytes=self.settings.max_body_bytes, allow_empty=True),
        )
        title = clean_title(body.title, self.settings.max_title_chars)
        check_metadata(body.metadata, self.settings.max_metadata_bytes)
        session = await self.service.create_session(
            principal.user_id, title=title, chat_type=body.chat_type, metadata=body.metadata
        )
        return JSONResponse(dump(SessionOut.of(session)), status_code=201)

    async def list(self, request: Request) -> Response:
        principal = await self._principal(request)
        known_query(request, {"limit", "cursor", "status", "chat_type"})
        limit = int_query(request, "limit", default=20, minimum=1, maximum=100)
        status = request.query_params.get("status")
        if status is not None and status not in ("active", "archived"):
            raise BadRequest("status must be 'active' or 'archived'")
        chat_type = request.query_params.get("chat_type")
        if chat_type is not None and not is_valid_chat_type(chat_type):
            raise BadRequest("invalid chat_type")
        page = await self.service.list_sessions(
            principal.user_id,
            limit=limit,
            cursor=cursor_param(request),
            status=status,
            chat_type=chat_type,
        )
        out = SessionListOut(sessions=[SessionOut.of(s) for s in page.sessions], next_cursor=page.next_cursor)
        return JSONResponse(dump(out))

    async def get(self, request: Request) -> Response:
        principal = await self._principal(request)
        known_query(request, set())
        session_id = session_id_param(request)
        session = await self.service.get_session_meta(session_id, principal.user_id)
        if session is None:
            raise NotFound("session not found")
        return JSONResponse(dump(SessionOut.of(session)))

    async def messages(self, request: Request) -> Response:
        principal = await self._principal(request)
        known_query(request, {"limit", "cursor", "branch"})
        session_id = session_id_param(request)
        limit = int_query(request, "limit", default=50, minimum=1, maximum=200)
        branch = request.query_params.get("branch", "active")
        if branch not in ("active", "all"):
            raise BadRequest("branch must be 'active' or 'all'")
        page = await self.service.list_messages(
            session_id,
            principal.user_id,
            limit=limit,
            cursor=cursor_param(request),
            branch="all" if branch == "all" else "active",
        )
        versions = page.versions if branch == "active" else {}
        messages = [
            MessageOut.of(m, versions=versions.get(m.seq or 0), feedback=page.feedback.get(m.turn_id or ""))
            for m in page.messages
        ]
        return JSONResponse(dump(MessageListOut(messages=messages, next_cursor=page.next_cursor)))

    async def put_feedback(self, request: Request) -> Response:
        principal = await self._principal(request)
        session_id, turn_id = session_id_param(request), session_id_param(request, "message_id")
        body = parse_model(FeedbackIn, await read_json(request, max_bytes=self.settings.max_body_bytes))
        comment = check_text(body.comment, loc=["comment"], max_chars=MAX_COMMENT_CHARS) if body.comment else ""
        feedback = await self.service.set_feedback(session_id, principal.user_id, turn_id, body.rating, comment or None)
        return JSONResponse(dump(FeedbackOut.of(feedback)))

    async def delete_feedback(self, request: Request) -> Response:
        principal = await self._principal(request)
        session_id, turn_id = session_id_param(request), session_id_param(request, "message_id")
        await self.service.delete_feedback(session_id, principal.user_id, turn_id)
        return Response(status_code=204)

    async def get_context(self, request: Request) -> Response:
        principal = await self._principal(request)
        known_query(request, set())
        return JSONResponse(dump(UserContextOut.of(await self.contexts.current(principal.user_id))))

    async def put_context(self, request: Request) -> Response:
        principal = await self._principal(request)
        body = parse_model(UserContextIn, await read_json(request, max_bytes=self.settings.max_body_bytes))
        text = check_text(body.context, loc=["context"], max_chars=self.settings.user_context_max_chars)
        saved = await self.contexts.put(principal.user_id, text, expected_version=body.version)
        return JSONResponse(dump(UserContextOut.of(saved)))

    async def versions(self, request: Request) -> Response:
        principal = await self._principal(request)
        known_query(request, set())
        session_id = session_id_param(request)
        found, active = await self.service.versions(session_id, principal.user_id, message_ref(request))
        return JSONResponse(dump(VersionsOut(versions=[MessageOut.of(m) for m in found], active_index=active)))

    async def switch_branch(self, request: Request) -> Response:
        principal = await self._principal(request)
        session_id = session_id_param(request)
        body = parse_model(SwitchBranchIn, await read_json(request, max_bytes=self.settings.max_body_bytes))
        if not MESSAGE_REF.fullmatch(body.message_id):
            raise ValidationFailed("invalid message id", details=[{"loc": ["message_id"], "msg": "invalid id"}])
        session = await self.service.switch_branch(session_id, principal.user_id, body.message_id)
        return JSONResponse(dump(SessionOut.of(session)))

    async def update(self, request: Request) -> Response:
        principal = await self._principal(request)
        session_id = session_id_param(request)
        body = parse_model(UpdateSessionIn, await read_json(request, max_bytes=self.settings.max_body_bytes))
        nulls = sorted(name for name in body.model_fields_set if getattr(body, name) is None)
        if nulls:
            details = [{"loc": [name], "msg": "must not be null (leave it out to keep it)"} for name in nulls]
            raise ValidationFailed("invalid request body", details=details)
        changes = body.model_dump(exclude_none=True)
        if not changes:
            raise ValidationFailed("nothing to update: give title, chat_type, status or metadata")
        if "title" in changes:
            changes["title"] = clean_title(changes["title"], self.settings.max_title_chars)
        if "metadata" in changes:
            check_metadata(changes["metadata"], self.settings.max_metadata_bytes)
        session = await self.service.update_session(session_id, changes, user_id=principal.user_id)
        if session is None:
            raise NotFound("session not found")
        return JSONResponse(dump(SessionOut.of(session)))

    async def delete(self, request: Request) -> Response:
        principal = await self._principal(request)
        session_id = session_id_param(request)
        if not await self.service.delete_session(session_id, principal.user_id):
            raise NotFound("session not found")
        return Response(status_code=204)

    async def delete_many(self, request: Request) -> Response:
        principal = await self._principal(request)
        body = parse_model(DeleteSessionsIn, await read_json(request, max_bytes=self.settings.max_body_bytes))
        deleted, missing = await self.service.delete_sessions(body.session_ids, principal.user_id)
        return JSONResponse(dump(DeleteSessionsOut(deleted=deleted, not_found=missing)))


def create_sessions_app(
    service: SessionService,
    authenticator: Authenticator,
    settings: Settings,
    *,
    contexts: UserContextService | None = None,
) -> Starlette:
    """The app over ``service``; ``contexts`` defaults to the user contexts over the same store and cache."""
    api = SessionsApi(service, authenticator, settings, contexts or UserContextService(service))
    routes = [
        Route("/health", api.health, methods=["GET"]),
        Route("/sessions/openapi.json", api.openapi, methods=["GET"]),
        Route("/sessions", api.create, methods=["POST"]),
        Route("/sessions", api.list, methods=["GET"]),
        Route("/sessions/batch-delete", api.delete_many, methods=["POST"]),
        Route("/sessions/{session_id}", api.get, methods=["GET"]),
        Route("/sessions/{session_id}", api.update, methods=["PATCH"]),
        Route("/sessions/{session_id}", api.delete, methods=["DELETE"]),
        Route("/sessions/{session_id}/messages", api.messages, methods=["GET"]),
        Route("/sessions/{session_id}/messages/{message_id}/versions", api.versions, methods=["GET"]),
        Route("/sessions/{session_id}/branch", api.switch_branch, methods=["PUT"]),
        Route("/sessions/{session_id}/messages/{message_id}/feedback", api.put_feedback, methods=["PUT"]),
        Route("/sessions/{session_id}/messages/{message_id}/feedback", api.delete_feedback, methods=["DELETE"]),
        Route("/users/me/context", api.get_context, methods=["GET"]),
        Route("/users/me/context", api.put_context, methods=["PUT"]),
    ]
    return json_api(routes)


def default_sessions_app() -> Starlette:
    from chatcore.container import default_container

    container = default_container()
    settings = container.settings
    return create_sessions_app(container.sessions, Authenticator(settings), settings, contexts=container.user_contexts)
