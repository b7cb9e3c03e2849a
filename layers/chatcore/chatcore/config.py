"""Settings, read once from the environment into a typed, frozen object.

This is the only module that reads ``os.environ``. Everything else receives a ``Settings`` — from the container
(``chatcore.container``), which reads them once — so tests and the local stack pass their own.

Secrets never travel as environment variables in a deployment: ``*_SECRET_ARN`` settings name Secrets Manager
secrets, read once when the settings are first built (``chatcore.secret_settings``) and kept for the container's
life. The plain ``JWT_SECRET`` / ``CALLBACK_SECRET`` / ``REDIS_URL`` / ``LLM_API_KEY`` variables remain for local
runs and tests.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args

from chatcore.errors import ConfigError

__all__ = ["LEVEL_NAMES", "AuthMode", "ConfigError", "ProtocolLevelName", "Settings", "environment_settings"]

AuthMode = Literal["hs256", "jwks"]
# The UI message stream levels (``chatcore.stream.LEVELS`` has one per name). Named here, not imported from
# chatcore.stream: its pydantic chunk models are no part of a function that never streams (a cold start).
ProtocolLevelName = Literal["v5", "v6", "v7"]
LEVEL_NAMES: tuple[ProtocolLevelName, ...] = get_args(ProtocolLevelName)

# The user context rides in every chat turn's system prompt and is one small DynamoDB item: 32,000 characters are at
# most 128 KB of UTF-8 (the item limit is 400 KB) and ~9,000 estimated tokens of the prompt.
MAX_USER_CONTEXT_CHARS = 32_000

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _bool(env: Mapping[str, str], key: str, default: bool) -> bool:
    raw = env.get(key)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{key} must be a boolean (true/false), got {raw!r}")


def _names(env: Mapping[str, str], key: str) -> tuple[str, ...] | None:
    """A comma-separated list of names; None when unset or empty (keep the defaults); ``none``: an empty list."""
    value = env.get(key, "").strip()
    if not value:
        return None
    if value.lower() == "none":
        return ()
    return tuple(name.strip() for name in value.split(",") if name.strip())


def _int(env: Mapping[str, str], key: str, default: int, *, minimum: int = 0) -> int:
    raw = env.get(key)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigError(f"{key} must be an integer, got {raw!r}") from exc
    if value < minimum:
        raise ConfigError(f"{key} must be >= {minimum}, got {value}")
    return value


def _float(env: Mapping[str, str], key: str, default: float) -> float:
    raw = env.get(key)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(f"{key} must be a number, got {raw!r}") from exc
    if not math.isfinite(value):
        raise ConfigError(f"{key} must be a finite number, got {raw!r}")
    if value <= 0:
        raise ConfigError(f"{key} must be > 0, got {value}")
    return value


def _protocol_level(env: Mapping[str, str]) -> ProtocolLevelName:
    raw = env.get("UI_STREAM_PROTOCOL", "")
    wanted = raw.strip().lower()  # as chatcore.stream.protocol_level reads a header
    if wanted == "":
        return "v5"
    for name in LEVEL_NAMES:
        if name == wanted:
            return name
    raise ConfigError(f"UI_STREAM_PROTOCOL must be one of {', '.join(LEVEL_NAMES)}, got {raw!r}")


@dataclass(frozen=True)
class Settings:
    table_name: str = "ChatTable"
    redis_url: str = field(default="", repr=False)  # may hold a password
    redis_url_secret_arn: str = ""
    cache_ttl_seconds: int = 900
    redis_timeout_seconds: float = 0.5
    redis_retry_after_seconds: float = 5.0
    redis_cluster: bool = False  # a cluster-mode server (ElastiCache Serverless): the cluster-aware client
    redis_tls_ca_file: str = ""  # CA bundle that verifies a rediss:// server; empty = the system trust store

    auth_mode: AuthMode = "hs256"
    jwt_secret: str = field(default="", repr=False)
    jwt_secret_arn: str = ""
    jwt_issuer: str = ""
    jwt_audience: str = ""
    jwks_url: str = ""
    allow_anonymous: bool = False

    session_ttl_days: int = 0
    max_title_chars: int = 200
    max_metadata_bytes: int = 2048
    max_message_chars: int = 32_000
    max_body_bytes: int = 262_144
    user_context_max_chars: int = 4000
    cors_allow_origins: tuple[str, ...] = ()

    llm_base_url: str = ""
    llm_api_key: str = field(default="", repr=False)
    llm_api_key_secret_arn: str = ""
    llm_model: str = "gpt-4o-mini"
    llm_title_model: str = ""
    llm_timeout_seconds: float = 60.0
    # How long one attempt may wait for its first output (text or a tool call) before it is retried or given up.
    llm_first_token_seconds: float = 20.0
    # The Lambda function's timeout (0: unknown, e.g. locally): a turn starts no model attempt it could not finish
    # before the function is stopped (FUNCTION_RESERVE_SECONDS are kept for storing what was produced).
    function_timeout_seconds: int = 0
    llm_max_retries: int = 2
    llm_context_tokens: int = 16_000
    max_tool_rounds: int = 4
    # The tools that wait for the user's approval before they run: None = each tool's own flag
    # (``Tool.requires_approval``); a list (even empty) replaces those flags.
    tools_requiring_approval: tuple[str, ...] | None = None
    approval_timeout_seconds: int = 86_400
    system_prompt: str = "You are a helpful assistant."
    system_prompt_parameter: str = ""
    # A turn's lease on its session, renewed every turn_lease_renew_seconds while the turn runs: a crashed
    # function's session is free again within turn_lease_seconds.
    turn_lease_seconds: int = 30
    turn_lease_renew_seconds: float = 10.0
    # The write that ends a turn (what the user has seen streamed) retries throttling this long after botocore's
    # own retries gave up.
    answer_write_retry_seconds: float = 8.0
    replay_ttl_seconds: int = 1800
    heartbeat_seconds: float = 15.0
    resume_idle_seconds: int = 240
    title_timeout_seconds: float = 8.0
    ui_stream_protocol: ProtocolLevelName = "v5"  # chatcore.stream.LEVELS; a request may choose another

    state_machine_arn: str = ""
    callback_secret: str = field(default="", repr=False)
    callback_secret_arn: str = ""
    callback_url: str = ""
    operation_guard_seconds: int = 86_400
    max_operation_depth: int = 3
    tool_timeout_seconds: int = 900
    callback_heartbeat_seconds: int = 3600
    callback_timeout_seconds: int = 86_400

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        auth_mode = env.get("AUTH_MODE", "hs256").strip().lower()
        if auth_mode not in ("hs256", "jwks"):
            raise ConfigError(f"AUTH_MODE must be 'hs256' or 'jwks', got {auth_mode!r}")
        jwt_issuer = env.get("JWT_ISSUER", "").strip()
        jwks_url = env.get("JWKS_URL", "").strip()
        if auth_mode == "jwks" and not jwks_url:
            if not jwt_issuer:
                raise ConfigError("AUTH_MODE=jwks needs JWKS_URL or JWT_ISSUER")
            jwks_url = jwt_issuer.rstrip("/") + "/.well-known/jwks.json"
        origins = tuple(o.strip() for o in env.get("CORS_ALLOW_ORIGINS", "").split(",") if o.strip())
        settings = cls(
            table_name=env.get("CHAT_TABLE_NAME", "ChatTable"),
            redis_url=env.get("REDIS_URL", "").strip(),
            redis_url_secret_arn=env.get("REDIS_URL_SECRET_ARN", "").strip(),
            cache_ttl_seconds=_int(env, "CACHE_TTL_SECONDS", 900, minimum=1),
            redis_timeout_seconds=_float(env, "REDIS_TIMEOUT_SECONDS", 0.5),
            redis_retry_after_seconds=_float(env, "REDIS_RETRY_AFTER_SECONDS", 5.0),
            redis_cluster=_bool(env, "REDIS_CLUSTER", False),
            redis_tls_ca_file=env.get("REDIS_TLS_CA_FILE", "").strip(),
            auth_mode=auth_mode,  # type: ignore[arg-type]  # checked above
            jwt_secret=env.get("JWT_SECRET", ""),
            jwt_secret_arn=env.get("JWT_SECRET_ARN", "").strip(),
            jwt_issuer=jwt_issuer,
            jwt_audience=env.get("JWT_AUDIENCE", "").strip(),
            jwks_url=jwks_url,
            allow_anonymous=_bool(env, "ALLOW_ANONYMOUS", False),
            session_ttl_days=_int(env, "SESSION_TTL_DAYS", 0),
            max_title_chars=_int(env, "MAX_TITLE_CHARS", 200, minimum=1),
            max_metadata_bytes=_int(env, "MAX_METADATA_BYTES", 2048, minimum=2),
            max_message_chars=_int(env, "MAX_MESSAGE_CHARS", 32_000, minimum=1),
            max_body_bytes=_int(env, "MAX_BODY_BYTES", 262_144, minimum=1024),
            user_context_max_chars=_int(env, "USER_CONTEXT_MAX_CHARS", 4000, minimum=1),
            cors_allow_origins=origins,
            llm_base_url=env.get("LLM_BASE_URL", "").strip(),
            llm_api_key=env.get("LLM_API_KEY", ""),
            llm_api_key_secret_arn=env.get("LLM_API_KEY_SECRET_ARN", "").strip(),
            llm_model=env.get("LLM_MODEL", "gpt-4o-mini").strip() or "gpt-4o-mini",
            llm_title_model=env.get("LLM_TITLE_MODEL", "").strip(),
            llm_timeout_seconds=_float(env, "LLM_TIMEOUT_SECONDS", 60.0),
            llm_first_token_seconds=_float(env, "LLM_FIRST_TOKEN_SECONDS", 20.0),
            function_timeout_seconds=_int(env, "FUNCTION_TIMEOUT_SECONDS", 0),
            llm_max_retries=_int(env, "LLM_MAX_RETRIES", 2),
            llm_context_tokens=_int(env, "LLM_CONTEXT_TOKENS", 16_000, minimum=1000),
            max_tool_rounds=_int(env, "MAX_TOOL_ROUNDS", 4, minimum=1),
            tools_requiring_approval=_names(env, "TOOLS_REQUIRING_APPROVAL"),
            approval_timeout_seconds=_int(env, "APPROVAL_TIMEOUT_SECONDS", 86_400, minimum=10),
            system_prompt=env.get("SYSTEM_PROMPT", "You are a helpful assistant."),
            system_prompt_parameter=env.get("SYSTEM_PROMPT_PARAMETER", "").strip(),
            turn_lease_seconds=_int(env, "TURN_LEASE_SECONDS", 30, minimum=2),
            turn_lease_renew_seconds=_float(env, "TURN_LEASE_RENEW_SECONDS", 10.0),
            answer_write_retry_seconds=_float(env, "ANSWER_WRITE_RETRY_SECONDS", 8.0),
            replay_ttl_seconds=_int(env, "REPLAY_TTL_SECONDS", 1800, minimum=60),
            heartbeat_seconds=_float(env, "HEARTBEAT_SECONDS", 15.0),
            resume_idle_seconds=_int(env, "RESUME_IDLE_SECONDS", 240, minimum=1),
            title_timeout_seconds=_float(env, "TITLE_TIMEOUT_SECONDS", 8.0),
            ui_stream_protocol=_protocol_level(env),
            state_machine_arn=env.get("STATE_MACHINE_ARN", "").strip(),
            callback_secret=env.get("CALLBACK_SECRET", ""),
            callback_secret_arn=env.get("CALLBACK_SECRET_ARN", "").strip(),
            # A Function URL ends in "/": strip it so the URLs handed out have no "//".
            callback_url=env.get("CALLBACK_URL", "").strip().rstrip("/"),
            operation_guard_seconds=_int(env, "OPERATION_GUARD_SECONDS", 86_400, minimum=60),
            max_operation_depth=_int(env, "MAX_OPERATION_DEPTH", 3, minimum=1),
            tool_timeout_seconds=_int(env, "TOOL_TIMEOUT_SECONDS", 900, minimum=1),
            callback_heartbeat_seconds=_int(env, "CALLBACK_HEARTBEAT_SECONDS", 3600, minimum=1),
            callback_timeout_seconds=_int(env, "CALLBACK_TIMEOUT_SECONDS", 86_400, minimum=1),
        )
        settings.check()
        return settings

    def check(self) -> None:
        """Rules across settings (CloudFormation cannot compare two parameters, so they are checked here)."""
        if self.redis_tls_ca_file and self.redis_url and not self.redis_url.startswith("rediss://"):
            raise ConfigError("REDIS_TLS_CA_FILE needs a TLS REDIS_URL (rediss://...)")
        if self.callback_heartbeat_seconds >= self.callback_timeout_seconds:
            raise ConfigError(
                "CALLBACK_HEARTBEAT_SECONDS must be less than CALLBACK_TIMEOUT_SECONDS "
                f"({self.callback_heartbeat_seconds} >= {self.callback_timeout_seconds})"
            )
        if not 0 < self.turn_lease_renew_seconds * 2 <= self.turn_lease_seconds:
            raise ConfigError(
                "TURN_LEASE_RENEW_SECONDS must be positive and at most half of TURN_LEASE_SECONDS "
                f"({self.turn_lease_renew_seconds} vs {self.turn_lease_seconds}): a lease must survive a failed renewal"
            )
        if self.user_context_max_chars > MAX_USER_CONTEXT_CHARS:
            raise ConfigError(
                f"USER_CONTEXT_MAX_CHARS must be at most {MAX_USER_CONTEXT_CHARS}, got {self.user_context_max_chars}"
            )
        if self.tool_timeout_seconds > 900:
            raise ConfigError(
                f"TOOL_TIMEOUT_SECONDS must be at most 900 (a Lambda run), got {self.tool_timeout_seconds}"
            )

    def secret_arns(self) -> dict[str, str]:
        """The Secrets Manager secrets to read at init: setting name -> ARN, for the values not given directly."""
        pairs = {
            "jwt_secret": self.jwt_secret_arn,
            "callback_secret": self.callback_secret_arn,
            "redis_url": self.redis_url_secret_arn,
            "llm_api_key": self.llm_api_key_secret_arn,
        }
        return {name: arn for name, arn in pairs.items() if arn and not getattr(self, name)}


def environment_settings() -> Settings:
    """The settings of this process's environment (secrets still as ARNs: the container reads them)."""
    return Settings.from_env(os.environ)
