"""The local stack: every function's routes on one origin at 127.0.0.1, on embedded defaults.

* DynamoDB: moto in-process (or a real endpoint/account when ``AWS_ENDPOINT_URL`` is set / ``--aws external``);
  the table is created from ``template.yaml``'s own definition.
* Redis: ``REDIS_URL`` when set, else an embedded in-process server (fakeredis over TCP, Lua and streams included).
* LLM: ``LLM_BASE_URL`` (+ ``LLM_API_KEY``) when set, else the offline model (local/offline_llm.py), an
  OpenAI-compatible streaming server on loopback that answers deterministically and calls tools when asked.
* Auth: HS256 with a secret generated at start (or ``JWT_SECRET``); ``POST /dev/token`` issues tokens for local
  users. That route exists only here, never in the template.

The same ``chatcore`` code runs as in Lambda; only the wiring below is local.
"""

from __future__ import annotations

import os
import secrets
import threading
from dataclasses import dataclass, field, replace
from typing import Any

import boto3
from botocore.exceptions import ClientError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match, Route

from chatcore.auth import Authenticator
from chatcore.aws import running_as
from chatcore.config import Settings
from chatcore.container import Container, set_default_container
from chatcore.errors import ValidationFailed
from chatcore.sessions import SessionService
from chatcore.tools import ToolRegistry
from chatcore.turns import ChatEngine
from chatcore.web.api import json_api
from chatcore.web.callback_app import create_callback_app
from chatcore.web.chat_app import create_chat_app
from chatcore.web.inputs import read_json
from chatcore.web.sessions_app import create_sessions_app
from local.handlers import load_handler_module
from local.moto_server import RUNNING, MotoServer
from local.offline_llm import OfflineLLM
from local.step_functions import deploy_state_machine
from local.template import create_table_kwargs
from local.web import web_routes

DEFAULT_TABLE = "ChatTable"
_FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


@dataclass
class Part:
    name: str
    mode: str
    detail: str


class RunAsFunction:
    """ASGI middleware: a request runs as the template function that owns the route it matches
    (``chatcore.aws.running_as``); in AWS each function has its own URL, here they share one origin."""

    def __init__(self, app: Any, functions: dict[str, list[BaseRoute]]) -> None:
        self.app = app
        self.functions = functions

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        function = None
        if scope["type"] == "http":
            function = next(
                (
                    name
                    for name, routes in self.functions.items()
                    if any(route.matches(scope)[0] is Match.FULL for route in routes)
                ),
                None,
            )
        if function is None:
            await self.app(scope, receive, send)
            return
        with running_as(function):
            await self.app(scope, receive, send)


@dataclass
class LocalStack:
    """Start with ``start()``; ``app`` is the ASGI app to serve; ``stop()`` releases the embedded services."""

    aws: str = "auto"  # auto | embedded | external
    table: str | None = None  # default: CHAT_TABLE_NAME or ChatTable
    redis_url: str | None = None  # default: REDIS_URL or an embedded server; "" = no Redis
    llm_base_url: str | None = None  # default: LLM_BASE_URL or the offline model
    overrides: dict[str, Any] = field(default_factory=dict)  # Settings fields to override
    public_url: str = ""  # where this stack is served (the callback URL tools hand out)
    settings: Settings | None = None
    parts: list[Part] = field(default_factory=list)
    app: Any = None
    llm: OfflineLLM | None = None
    _moto: MotoServer | None = None
    _redis: Any = None
    _redis_thread: threading.Thread | None = None
    tools: ToolRegistry | None = None  # default: the built-in tools
    container: Container | None = None

    def start(self) -> LocalStack:
        os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")  # no EMF lines on the console
        table = self.table or os.environ.get("CHAT_TABLE_NAME", DEFAULT_TABLE)
        self._start_aws(table)
        redis_url = self._start_redis()
        llm_url, llm_key, llm_model = self._start_llm()
        secret = os.environ.get("JWT_SECRET") or secrets.token_urlsafe(32)
        how = "secret from JWT_SECRET" if "JWT_SECRET" in os.environ else "secret generated at start"
        self.parts.append(Part("auth", "embedded", f"HS256, {how}; POST /dev/token"))
        state_machine_arn = self._start_step_functions()
        wiring: dict[str, Any] = dict(
            table_name=table,
            redis_url=redis_url,
            auth_mode="hs256",
            jwt_secret=secret,
            cors_allow_origins=("*",),
            llm_base_url=llm_url,
            llm_api_key=llm_key,
            llm_model=llm_model,
            state_machine_arn=state_machine_arn,
            callback_secret=os.environ.get("CALLBACK_SECRET") or secrets.token_urlsafe(32),
            callback_url=self.public_url,
        )
        settings = self.settings = replace(Settings.from_env(os.environ), **{**wiring, **self.overrides})
        self.install_default_container()
        self.container = Container(settings, tools=self.tools)
        self.app = self._build_app(settings, self.container)
        return self

    @property
    def service(self) -> SessionService | None:
        return self.container.sessions if self.container is not None else None

    @property
    def engine(self) -> ChatEngine | None:
        return self.container.engine if self.container is not None else None

    def install_default_container(self) -> None:
        """The functions' handlers that run in-process (state machine tasks, local invoke) get a container of their
        own (each Lambda function has its own process), built from this stack's settings, not from os.environ."""
        settings, tools = self.settings, self.tools
        assert settings is not None
        set_default_container(lambda: Container(settings, tools=tools))
        load_handler_module.cache_clear()  # handler modules keep their app for the container's life: reload

    def _start_step_functions(self) -> str:
        """moto runs the real ASL in-process when DynamoDB is the in-process moto; else STATE_MACHINE_ARN."""
        endpoint = os.environ.get("AWS_ENDPOINT_URL", "")
        server = RUNNING.get(endpoint)
        if server is not None:
            os.environ["MOTO_PORT"] = str(server.port)  # where moto's interpreter sends its Lambda invokes
            arn = deploy_state_machine()
            self.parts.append(
                Part("sfn", "embedded", "moto runs statemachines/tool_operation.asl.json, tasks in-process")
            )
            return arn
        arn = os.environ.get("STATE_MACHINE_ARN", "")
        self.parts.append(Part("sfn", "real" if arn else "off", arn or "no state machine: long-running tools off"))
        return arn

    def _start_llm(self) -> tuple[str, str, str]:
        url = self.llm_base_url if self.llm_base_url is not None else os.environ.get("LLM_BASE_URL", "")
        if url:
            model = os.environ.get("LLM_MODEL", "gpt-4o-mini")
            self.parts.append(Part("llm", "real", f"{url}, model {model}"))
            return url, os.environ.get("LLM_API_KEY", ""), model
        self.llm = OfflineLLM().start()
        self.parts.append(Part("llm", "embedded", f"offline model at {self.llm.base_url}"))
        return self.llm.base_url, "offline", "offline-chat"

    def _start_aws(self, table: str) -> None:
        external = self.aws == "external" or (self.aws == "auto" and os.environ.get("AWS_ENDPOINT_URL"))
        if not external:
            for key, value in _FAKE_AWS.items():
                os.environ[key] = value
            os.environ.pop("AWS_PROFILE", None)
            self._moto = MotoServer().start()
            os.environ["AWS_ENDPOINT_URL"] = self._moto.url
            self.parts.append(Part("dynamodb", "embedded", f"moto at {self._moto.url}, table {table}"))
        else:
            where = os.environ.get("AWS_ENDPOINT_URL", "AWS account from the default credential chain")
            self.parts.append(Part("dynamodb", "real", f"{where}, table {table}"))
        client = boto3.client("dynamodb")
        try:
            client.create_table(**create_table_kwargs(table))
            client.get_waiter("table_exists").wait(TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ResourceInUseException":
                raise

    def _start_redis(self) -> str:
        url = self.redis_url if self.redis_url is not None else os.environ.get("REDIS_URL", "").strip()
        if self.redis_url == "":
            self.parts.append(Part("redis", "off", "no cache: resume unavailable"))
            return ""
        if url:
            self.parts.append(Part("redis", "real", url))
            return url
        from fakeredis import TcpFakeServer

        self._redis = TcpFakeServer(("127.0.0.1", 0), server_type="redis")
        self._redis_thread = threading.Thread(target=self._redis.serve_forever, name="redis", daemon=True)
        self._redis_thread.start()
        host, port = self._redis.server_address[:2]
        url = f"redis://{host}:{port}/0"
        self.parts.append(Part("redis", "embedded", f"in-process server at {url}"))
        return url

    @staticmethod
    def _build_app(settings: Settings, container: Container) -> Starlette:
        import jwt

        auth = Authenticator(settings)
        sessions = create_sessions_app(container.sessions, auth, settings, contexts=container.user_contexts)
        engine = container.engine
        chat = create_chat_app(engine, auth, settings)
        chat_routes = [r for r in chat.router.routes if getattr(r, "path", "") != "/health"]
        callback = create_callback_app(engine.deps.operations, settings)
        callback_routes = [r for r in callback.router.routes if getattr(r, "path", "") != "/health"]

        async def dev_token(request: Request) -> Response:
            body = await read_json(request, max_bytes=4096)
            user_id = body.get("user_id") if isinstance(body, dict) else None
            if not isinstance(user_id, str) or not 1 <= len(user_id) <= 64 or not user_id.isprintable():
                raise ValidationFailed("user_id must be a string of 1 to 64 printable characters")
            import time

            now = int(time.time())
            claims = {"sub": user_id, "iat": now, "exp": now + 12 * 3600}
            return JSONResponse({"token": jwt.encode(claims, settings.jwt_secret, algorithm="HS256")})

        # The functions' routes are disjoint, so one router serves them all (and answers 404/405 as JSON);
        # a request runs as the function whose route it matched, as it would in AWS.
        functions = {
            "SessionsFunction": sessions.router.routes,
            "CallbackFunction": callback_routes,
            "ChatFunction": chat_routes,
        }
        return json_api(
            [
                *web_routes(),
                Route("/dev/token", dev_token, methods=["POST"]),
                *sessions.router.routes,
                *callback_routes,
                *chat_routes,
            ],
            middleware=[
                Middleware(
                    CORSMiddleware,
                    allow_origins=list(settings.cors_allow_origins),
                    allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                    allow_headers=["authorization", "content-type", "last-event-id", "x-ui-stream-protocol"],
                ),
                Middleware(RunAsFunction, functions=functions),
            ],
        )

    def stop(self) -> None:
        set_default_container(None)
        if self.llm is not None:
            self.llm.stop()
        if self._redis is not None:
            self._redis.shutdown()
            self._redis.server_close()
        if self._moto is not None:
            self._moto.stop()
