"""The narrow interfaces the chat engine depends on — never boto3, Redis or openai types.

    SessionRepository   sessions as the engine reads and writes them (DynamoDB + cache: ``SessionService``)
    TurnLeases          the one-turn-per-session lease on META (``SessionLeases``)
    UserContexts        what the assistant knows about each user, read with the session
                        (``chatcore.user_context.UserContextService``)
    ReplayLog           a turn's replay log, active-turn pointers and cancel flags (``chatcore.replay.ReplayLog``)
    ChatModel           the LLM (``chatcore.llm.LLM``)
    ApprovalRecords     tool calls waiting for the user's approval (``chatcore.dynamo.approvals.ApprovalStore``)
    OperationStarter    long-running tools (``chatcore.operations.Operations``); its policy runs over
                        OperationRecordStore, ExecutionControl and StartGuard
    Clock               a monotonic clock (``time.monotonic``); timeouts inside a turn are asyncio's

The production adapters are named after each port; the engine's unit tests pass in-memory fakes
(``tests/unit/fakes.py``), so the turn logic is exercised without moto, Redis or HTTP.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from chatcore.approvals import Approval
    from chatcore.llm import LLMDelta
    from chatcore.models import ChatMessage, ChatSession, Usage
    from chatcore.operations import Operation, OperationStatus
    from chatcore.replay import LogEntry
    from chatcore.store import TurnGuard


# Seconds on a monotonic clock (``time.monotonic``): what the core's time-based caches read, so tests can move it.
Clock = Callable[[], float]


class SessionRepository(Protocol):
    async def get_chat_session(self, session_id: str, user_id: str | None = None) -> ChatSession | None: ...

    async def working_set_of(self, session_id: str, caller: str | None) -> ChatSession | None:
        """What a turn reads (``ChatSession.working_set``), when ``caller`` is exactly its owner."""
        ...

    async def load_working_set(self, session_id: str) -> ChatSession | None:
        """What a turn reads, from the source of truth (never a cached copy)."""
        ...

    async def upsert_chat_session(self, session: ChatSession, *, turn: TurnGuard | None = None) -> ChatSession: ...

    async def update_session_title(
        self, session_id: str, title: str, user_id: str | None = None
    ) -> ChatSession | None: ...

    async def propose_title(self, session_id: str, title: str) -> ChatSession | None:
        """A generated title, stored unless the user has named the session."""
        ...

    async def load_fresh(self, session_id: str) -> ChatSession | None:
        """The whole session from the source of truth (never a cached copy)."""
        ...

    async def active_turn_id(self, session_id: str) -> str | None:
        """The turn holding the session's lease, as stored."""
        ...

    async def set_summary(self, session_id: str, summary: str, seq: int) -> None: ...

    async def replace_pending(self, session_id: str, seq: int, message: ChatMessage) -> int | None: ...

    async def replace_placeholder(
        self, session_id: str, seq: int, message: ChatMessage, *, waiting: tuple[str, str]
    ) -> int | None:
        """Replace the placeholder at ``seq`` while it still waits for ``waiting`` (attribute, value); the new
        version, or None when nothing was replaced."""
        ...

    async def aclose(self) -> None:
        """Close what is bound to the running event loop (the cache's connections)."""
        ...


class ApprovalRecords(Protocol):
    """Pending tool approvals (``chatcore.approvals``; ``chatcore.dynamo.approvals.ApprovalStore``)."""

    async def create(self, approval: Approval) -> None: ...

    async def get(self, session_id: str, approval_id: str) -> Approval | None: ...

    async def answer(self, approval: Approval, *, now: int, before_deadline: bool = True) -> bool:
        """Record the answer if still pending (and before the deadline); False when it was not."""
        ...


class TurnLeases(Protocol):
    async def take(self, session: ChatSession, turn_id: str, *, owner: str | None, lease_seconds: int) -> ChatSession:
        """Take the session's lease for ``turn_id``; returns the session as it is now (reloaded when it changed
        since ``session`` was read), holding the lease. Raises ``TurnInProgress`` or ``NotFound``."""
        ...

    async def release(self, session_id: str, turn_id: str) -> None:
        """Give the lease back if ``turn_id`` still holds it; cached copies are invalidated."""
        ...

    async def renew(self, session_id: str, turn_id: str, *, lease_seconds: int) -> bool:
        """Extend the lease to ``lease_seconds`` from now while ``turn_id`` holds it; False when it does not (another
        turn took it after it lapsed, or it was released)."""
        ...

    async def take_lapsed(
        self, session_id: str, turn_id: str, closer_id: str, *, lease_seconds: int
    ) -> ChatSession | None:
        """Move the lease of ``turn_id`` to ``closer_id`` when it has lapsed (the turn stopped renewing it: its
        process is gone); the whole session as it is now, held by ``closer_id``, or None when ``turn_id`` does not
        hold a lapsed lease."""
        ...


class UserContexts(Protocol):
    async def session_with_context(self, session_id: str, user_id: str | None) -> tuple[ChatSession | None, str]:
        """The session's working set (``SessionRepository.working_set_of``; any owner's: the caller checks) and the
        context text of ``user_id`` ('' when none is stored, or for an anonymous caller), read together: one cache
        round trip when both are cached."""
        ...

    async def context_of(self, user_id: str | None) -> str:
        """The context text of ``user_id`` ('' when none is stored, or for an anonymous caller)."""
        ...


class ReplayLog(Protocol):
    @property
    def enabled(self) -> bool: ...

    def available(self) -> bool: ...

    async def begin(self, session_id: str, turn_id: str, client_message_id: str | None) -> bool: ...

    async def append(self, turn_id: str, chunks: list[str]) -> None: ...

    async def end(self, session_id: str, turn_id: str, last: Sequence[str] = ()) -> None:
        """Append ``last`` and the end entry; the session's pointer to the turn is dropped."""
        ...

    async def close_unless_ended(self, session_id: str, turn_id: str, chunks: list[str]) -> bool:
        """End a dead turn's log with ``chunks`` and its end entry unless it has ended (two closers write it once);
        the session's pointer to it is dropped. True when this call closed it."""
        ...

    async def active_turn(self, session_id: str) -> str | None: ...

    async def turn_of_client_message(self, session_id: str, client_message_id: str) -> str | None: ...

    async def read(self, turn_id: str, after: str, *, block_ms: int) -> list[LogEntry] | None: ...

    async def exists(self, turn_id: str) -> bool: ...

    async def ended(self, turn_id: str) -> bool:
        """The log holds its end entry, or is gone: a reader past its last entry has nothing left to wait for."""
        ...

    async def request_cancel(self, turn_id: str) -> bool: ...

    async def cancel_requested(self, turn_id: str) -> bool: ...


class ChatModel(Protocol):
    @property
    def title_model(self) -> str: ...

    def stream(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | None = None,
        model: str | None = None,
        deadline: float | None = None,
    ) -> AsyncIterator[LLMDelta]:
        """The model's answer as deltas; no retry is started that could not get its first output by
        ``deadline`` (``asyncio`` loop time)."""
        ...

    async def complete(
        self, messages: list[dict[str, Any]], *, model: str | None = None, max_tokens: int = 256
    ) -> tuple[str, Usage | None]: ...

    async def aclose(self) -> None: ...


class OperationRecordStore(Protocol):
    """The records of long-running tools (``chatcore.operations.records.OperationRecords``)."""

    async def get(self, operation_id: str) -> Operation | None: ...

    async def create(self, operation: Operation) -> Operation | None:
        """Record a new operation; the existing one when it was recorded before (nothing is written then)."""
        ...

    async def transition(
        self, operation_id: str, to: OperationStatus, *, expect: set[str], extra: dict[str, Any] | None = None
    ) -> bool: ...

    async def of_session(self, session_id: str) -> list[str]: ...

    async def claim_signature(self, digest: str, *, expires_at: int) -> bool: ...


class ExecutionControl(Protocol):
    """The state machine's executions (``chatcore.operations.executions.Executions``)."""

    @property
    def state_machine_arn(self) -> str: ...

    def arn_of(self, name: str) -> str: ...

    async def start(self, name: str, execution_input: dict[str, Any]) -> str: ...

    async def stop(self, name: str, *, error: str, cause: str) -> None: ...

    async def succeed(self, task_token: str, output: Any) -> None: ...

    async def fail(self, task_token: str, *, error: str, cause: str) -> None: ...

    async def heartbeat(self, task_token: str) -> None: ...


class StartGuard(Protocol):
    """A short-lived "already starting" mark per operation (``chatcore.operations.guard.OperationGuard``)."""

    async def take(self, operation_id: str) -> bool: ...

    async def release(self, operation_id: str) -> None: ...


class OperationStarter(Protocol):
    @property
    def enabled(self) -> bool: ...

    async def start(self, operation: Operation) -> Operation: ...
