"""The shapes the chat turn modules share: dependencies, a running turn's handle, an existing turn."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from chatcore.config import Settings
from chatcore.operations import Operations
from chatcore.ports import ApprovalRecords, ChatModel, ReplayLog, SessionRepository, TurnLeases, UserContexts
from chatcore.replay import TurnChannel
from chatcore.tools import ToolRegistry

if TYPE_CHECKING:
    from chatcore.turn_recorder import TurnRecorder


@dataclass
class ChatDeps:
    """What a chat turn needs, as ports (``chatcore.ports``): production adapters or in-memory fakes."""

    settings: Settings
    sessions: SessionRepository
    leases: TurnLeases
    llm: ChatModel
    tools: ToolRegistry
    replay: ReplayLog
    system_prompt: Callable[[], str]
    contexts: UserContexts
    operations: Operations | None = None
    approvals: ApprovalRecords | None = None


@dataclass
class TurnHandle:
    """A running turn of this process: listen to ``channel`` for its events."""

    session_id: str
    turn_id: str
    channel: TurnChannel
    accepted: asyncio.Future[None]
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    depth: int = 0  # how many background operations led to this turn
    # The assistant message this run writes (``start.messageId``, the stored messages' ``turn_id``): the turn's own
    # id, or the asking turn's when an approval's answer continues that message.
    answer_id: str = ""
    deadline: float | None = None  # loop time by which the model must have answered (the function's timeout)
    keeper: asyncio.Task[None] | None = None  # renews the lease while the run holds it
    recorder: TurnRecorder | None = None  # the run's writer: once it gave the lease back there is none to renew

    def __post_init__(self) -> None:
        self.answer_id = self.answer_id or self.turn_id


@dataclass(frozen=True)
class ExistingTurn:
    """A resent message whose turn already exists: replay that turn's log instead of starting another."""

    session_id: str
    turn_id: str
