"""One wiring: a ``Container`` builds every part of the backend from one ``Settings``, each on first use, and keeps
it while the Lambda container is warm. ``default_container()`` is the only process-wide cache.

Lambda entry points, the local stack, the benchmarks and the tests all take a container; parts can be injected
(``tools``, ``llm``, the Redis ``connector``) instead of monkeypatched. Heavy parts are imported where they are first
built, so a function that never chats never imports the LLM client.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from functools import cached_property, partial
from typing import TYPE_CHECKING

from chatcore.aws import AwsClients, read_parameter, read_secret
from chatcore.cache import RedisConnector, SessionCache
from chatcore.config import Settings, environment_settings
from chatcore.dynamo.store import SessionStore
from chatcore.sessions import SessionLeases, SessionService
from chatcore.user_context import UserContextService

if TYPE_CHECKING:
    from chatcore.context import TimedCache
    from chatcore.dynamo.approvals import ApprovalStore
    from chatcore.operations import Operations
    from chatcore.ports import ChatModel
    from chatcore.replay import ReplayLog
    from chatcore.tools import ToolRegistry
    from chatcore.turns import ChatEngine

SYSTEM_PROMPT_TTL_SECONDS = 300.0


class Container:
    def __init__(
        self,
        settings: Settings | None = None,
        *,
        tools: ToolRegistry | None = None,
        llm: ChatModel | None = None,
        aws: AwsClients | None = None,
        connector: RedisConnector | None = None,
    ) -> None:
        """``settings`` as given, or read from the environment on first use; either way a ``*_SECRET_ARN`` whose
        value is not given is read from Secrets Manager then."""
        self._given = settings
        self._tools = tools
        self._llm = llm
        self._connector = connector
        self.aws = aws or AwsClients()

    @cached_property
    def settings(self) -> Settings:
        settings = self._given if self._given is not None else environment_settings()
        if settings.secret_arns():
            from chatcore.secret_settings import with_secrets  # only where a secret is configured

            # The client is built here, once: secrets are read in parallel threads, which would each build one.
            client = self.aws.secretsmanager()
            read = partial(read_secret, client)
            settings = with_secrets(settings, read=read, meanwhile=self._prebuild_dynamodb)
        return settings

    def _prebuild_dynamodb(self) -> None:
        """Build the DynamoDB client, which nearly every first request uses next (a health check does not), while
        the secrets are read: tens of milliseconds of a cold start hidden behind a round trip. Meanwhile the other
        threads only use the Secrets Manager client built before them; none builds a client (``AwsClients`` is not
        thread-safe for that). A failure is met again, and reported, where the client is first used."""
        with suppress(Exception):
            self.aws.dynamodb()

    # -- storage ------------------------------------------------------------------------------------------------

    @cached_property
    def connector(self) -> RedisConnector:
        if self._connector is not None:
            return self._connector
        settings = self.settings
        return RedisConnector(
            settings.redis_url,
            timeout=settings.redis_timeout_seconds,
            retry_after=settings.redis_retry_after_seconds,
            cluster=settings.redis_cluster,
            ca_file=settings.redis_tls_ca_file,
        )

    @cached_property
    def store(self) -> SessionStore:
        return SessionStore(
            self.settings.table_name, client_factory=self.aws.dynamodb, session_ttl_days=self.settings.session_ttl_days
        )

    @cached_property
    def sessions(self) -> SessionService:
        cache = SessionCache(self.connector, ttl_seconds=self.settings.cache_ttl_seconds)
        # A delete stops the session's running operations; they are built on the first delete, not with the service.
        on_delete = self._cancel_operations if self.settings.state_machine_arn else None
        return SessionService(self.store, cache, on_delete=on_delete)

    async def _cancel_operations(self, session_id: str) -> list[str]:
        operations = self.operations
        return await operations.cancel_for_session(session_id) if operations is not None else []

    @cached_property
    def user_contexts(self) -> UserContextService:
        return UserContextService(self.sessions)

    @cached_property
    def leases(self) -> SessionLeases:
        return SessionLeases(self.store, self.sessions.cache)

    @cached_property
    def approvals(self) -> ApprovalStore:
        from chatcore.dynamo.approvals import ApprovalStore

        return ApprovalStore(self.store.table)

    @cached_property
    def replay(self) -> ReplayLog:
        from chatcore.replay import ReplayLog

        return ReplayLog(self.connector, ttl_seconds=self.settings.replay_ttl_seconds)

    @cached_property
    def operations(self) -> Operations | None:
        """Long-running tools, when a state machine is configured."""
        settings = self.settings
        if not settings.state_machine_arn:
            return None
        from chatcore.operations import Operations

        return Operations.build(
            settings.table_name,
            settings.state_machine_arn,
            self.connector,
            guard_seconds=settings.operation_guard_seconds,
            timeouts={
                "tool_timeout_seconds": settings.tool_timeout_seconds,
                "callback_heartbeat_seconds": settings.callback_heartbeat_seconds,
                "callback_timeout_seconds": settings.callback_timeout_seconds,
            },
            db=self.aws.dynamodb,
            sfn=self.aws.stepfunctions,
        )

    # -- chat ---------------------------------------------------------------------------------------------------

    @cached_property
    def llm(self) -> ChatModel:
        if self._llm is not None:
            return self._llm
        from chatcore.llm import LLM

        return LLM(self.settings)

    @cached_property
    def tools(self) -> ToolRegistry:
        if self._tools is not None:
            registry = self._tools
        else:
            from chatcore.builtin_tools import default_registry

            registry = default_registry()
        registry.require_approval_for(self.settings.tools_requiring_approval)
        return registry

    @cached_property
    def system_prompt(self) -> Callable[[], str]:
        """The prompt: the SSM parameter ``SYSTEM_PROMPT_PARAMETER`` when set (cached 5 minutes), else config."""
        from chatcore.context import TimedCache

        settings = self.settings
        source: TimedCache
        if settings.system_prompt_parameter:
            name = settings.system_prompt_parameter
            source = TimedCache(lambda: read_parameter(self.aws.ssm(), name), SYSTEM_PROMPT_TTL_SECONDS)
        else:
            source = TimedCache(lambda: settings.system_prompt, float("inf"))
        return source.get

    @cached_property
    def engine(self) -> ChatEngine:
        from chatcore.turn_types import ChatDeps
        from chatcore.turns import ChatEngine

        deps = ChatDeps(
            settings=self.settings,
            sessions=self.sessions,
            leases=self.leases,
            llm=self.llm,
            tools=self.tools,
            replay=self.replay,
            system_prompt=self.system_prompt,
            contexts=self.user_contexts,
            operations=self.operations,
            approvals=self.approvals,
        )
        return ChatEngine(deps)

    def renew(self) -> None:
        """Drop every client that holds connections or credentials (after a SnapStart restore: the snapshot's are
        shared by every restored environment and their sockets are gone); each is built again on its next use.
        Settings and the parts built on them stay."""
        self.aws.renew()
        if "connector" in self.__dict__:
            self.connector.renew()
        if "llm" in self.__dict__:
            from chatcore.llm import LLM

            if isinstance(self.llm, LLM):
                self.llm.renew()

    async def aclose(self) -> None:
        """Close what is bound to the running event loop (Redis connections, the LLM's HTTP pool); the container
        stays usable (they reopen on the next use)."""
        if "engine" in self.__dict__:
            await self.engine.aclose()
        elif "llm" in self.__dict__:
            await self.llm.aclose()
        if "connector" in self.__dict__:
            await self.connector.close()


_default: Container | None = None
_default_factory: Callable[[], Container] = Container


def default_container() -> Container:
    """This process's container: built on first use (from the environment), kept while the process lives."""
    global _default
    if _default is None:
        _default = _default_factory()
    return _default


def built_default_container() -> Container | None:
    """The default container if it was built (to close its loop-bound clients), else None."""
    return _default


def reset_default_container() -> None:
    """Forget the current default container: the next use builds a cold one (same factory)."""
    global _default
    _default = None


def set_default_container(factory: Callable[[], Container] | None) -> None:
    """Build the default container with ``factory`` from now on (None: from the environment) and forget the
    current one — the local stack runs the functions' handlers in-process with its own settings this way."""
    global _default, _default_factory
    _default = None
    _default_factory = factory or Container
