"""In-memory fakes of the engine's ports (``chatcore.ports``): the turn logic runs against these in unit tests,
without moto, Redis or HTTP. They keep the rules the engine relies on — versions, the one-turn lease, writes
guarded by the lease — and record what the engine asked of them."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from chatcore.approvals import Approval
from chatcore.dynamo.codecs import with_messages
from chatcore.errors import NotFound, ServiceRefused, TurnInProgress, TurnLost
from chatcore.llm import Finished, LLMDelta, TextDelta, ToolCallDelta
from chatcore.models import ChatMessage, ChatSession, Usage
from chatcore.replay import LogEntry
from chatcore.store import TurnGuard


def _copy(session: ChatSession) -> ChatSession:
    copy = session.model_copy(deep=True)
    copy.mark_clean()
    return copy


LEASE_WRITE_SECONDS = 0.005


class InMemorySessions:
    """``SessionRepository`` and ``TurnLeases`` over a dict: one source of truth, no cache."""

    def __init__(self) -> None:
        self.sessions: dict[str, ChatSession] = {}  # each holding its active path, as the store returns it
        self.trees: dict[str, list[ChatMessage]] = {}  # every stored message of a session, by seq
        self.writes: list[tuple[str, TurnGuard | None]] = []  # (session id, guard) of every upsert
        self.released: list[str] = []
        self.closed = False
        self.on_take: list[Callable[[], None]] = []  # run when a lease write "arrives"
        self.on_take_sent: list[Callable[[], None]] = []  # run when a lease write is sent
        self.user_titled: set[str] = set()  # sessions the user renamed (META user_title)
        self.expires: dict[str, float] = {}  # session id -> when its lease lapses (epoch seconds, ``now()``)
        self.renewals: list[str] = []  # turn ids, one per renewal that held
        self.now: Callable[[], float] = time.time

    def add(self, session: ChatSession) -> ChatSession:
        for seq, message in enumerate(session.messages, start=1):
            message.seq, message.parent_seq = seq, seq - 1
        session.message_count = session.leaf_seq = len(session.messages)
        self.sessions[session.session_id] = _copy(session)
        self.trees[session.session_id] = [m.model_copy() for m in session.messages]
        return session

    # -- SessionRepository ------------------------------------------------------------------------------------
    async def get_chat_session(self, session_id: str, user_id: str | None = None) -> ChatSession | None:
        stored = self.sessions.get(session_id)
        if stored is None or (user_id is not None and stored.user_id != user_id):
            return None
        return _copy(stored)

    async def working_set_of(self, session_id: str, caller: str | None) -> ChatSession | None:
        stored = self.sessions.get(session_id)
        return _copy(stored).working_set() if stored is not None and stored.user_id == caller else None

    async def load_working_set(self, session_id: str) -> ChatSession | None:
        found = await self.load_fresh(session_id)
        return found.working_set() if found is not None else None

    async def upsert_chat_session(self, session: ChatSession, *, turn: TurnGuard | None = None) -> ChatSession:
        # Like the store: new messages are appended and only the fields the caller changed are written.
        stored = self.sessions.get(session.session_id)
        if turn is not None and (stored is None or stored.active_turn_id != turn.turn_id):
            raise TurnLost("the turn no longer holds the lease")
        if stored is None:
            stored = self.sessions[session.session_id] = _copy(session)
            stored.leaf_seq = 0
        tree = self.trees.setdefault(session.session_id, [])
        for field_name, value in session.changed_fields().items():
            if field_name == "title" and session.title_proposed and session.session_id in self.user_titled:
                continue  # the store's if_not_exists(user_title, generated)
            setattr(stored, field_name, value)
        previous: int | None = None
        for message in session.messages:
            if message.seq is None:  # the store's rule: an own parent, else the one before it, else the leaf
                parent = message.parent_seq
                if parent is None:
                    parent = previous if previous is not None else stored.leaf_seq
                previous = stored.leaf_seq = len(tree) + 1
                tree.append(message.model_copy(update={"seq": previous, "parent_seq": parent}))
        stored.message_count = len(tree)
        with_messages(stored, [m.model_copy() for m in tree])
        stored.version += 1
        if turn is not None and turn.release:
            stored.active_turn_id = None
        self.writes.append((session.session_id, turn))
        return _copy(stored)

    async def update_session_title(self, session_id: str, title: str, user_id: str | None = None) -> ChatSession | None:
        stored = self.sessions.get(session_id)
        if stored is None:
            return None
        stored.title = title
        self.user_titled.add(session_id)
        stored.version += 1
        return _copy(stored)

    async def propose_title(self, session_id: str, title: str) -> ChatSession | None:
        stored = self.sessions.get(session_id)
        if stored is None:
            return None
        if session_id not in self.user_titled:
            stored.title = title
        stored.version += 1
        return _copy(stored)

    async def load_fresh(self, session_id: str) -> ChatSession | None:
        stored = self.sessions.get(session_id)
        return _copy(stored) if stored else None

    async def active_turn_id(self, session_id: str) -> str | None:
        stored = self.sessions.get(session_id)  # like the store's reads: a lapsed lease is no lease
        return stored.active_turn_id if stored and not self.lapsed(session_id) else None

    async def set_summary(self, session_id: str, summary: str, seq: int) -> None:
        stored = self.sessions[session_id]
        stored.context_summary, stored.summary_seq = summary, seq

    async def replace_pending(self, session_id: str, seq: int, message: ChatMessage) -> int | None:
        stored = self.sessions.get(session_id)
        tree = self.trees.get(session_id, [])
        if stored is None or tree[seq - 1].status != "pending":
            return None
        tree[seq - 1] = message.model_copy(update={"seq": seq, "parent_seq": tree[seq - 1].parent_seq})
        with_messages(stored, [m.model_copy() for m in tree])
        stored.version += 1
        return stored.version

    async def replace_placeholder(
        self, session_id: str, seq: int, message: ChatMessage, *, waiting: tuple[str, str]
    ) -> int | None:
        stored, tree = self.sessions.get(session_id), self.trees.get(session_id, [])
        attribute, value = waiting
        held = {"pending_op": tree[seq - 1].operation_id, "pending_approval": tree[seq - 1].approval_id}
        statuses = {"pending_op": "pending", "pending_approval": "awaiting_approval"}
        if stored is None or tree[seq - 1].status != statuses[attribute] or held[attribute] != value:
            return None
        tree[seq - 1] = message.model_copy(update={"seq": seq, "parent_seq": tree[seq - 1].parent_seq})
        with_messages(stored, [m.model_copy() for m in tree])
        stored.version += 1
        return stored.version

    async def aclose(self) -> None:
        self.closed = True

    # -- TurnLeases -------------------------------------------------------------------------------------------
    async def take(self, session: ChatSession, turn_id: str, *, owner: str | None, lease_seconds: int) -> ChatSession:
        for hook in self.on_take_sent:
            hook()
        await asyncio.sleep(LEASE_WRITE_SECONDS)  # the conditional write's round trip: work started before it overlaps
        for hook in self.on_take:
            hook()
        stored = self.sessions.get(session.session_id)
        if stored is None or stored.user_id != owner:
            raise NotFound("session not found")
        if stored.active_turn_id is not None and not self.lapsed(session.session_id):
            raise TurnInProgress("another reply is being generated in this session")
        stored.active_turn_id = turn_id
        self.expires[session.session_id] = self.now() + lease_seconds
        stored.version += 1
        return _copy(stored).working_set() if session.partial else _copy(stored)  # read again in its shape

    def lapsed(self, session_id: str) -> bool:
        return self.expires.get(session_id, float("inf")) < self.now()

    async def renew(self, session_id: str, turn_id: str, *, lease_seconds: int) -> bool:
        stored = self.sessions.get(session_id)
        if stored is None or stored.active_turn_id != turn_id:
            return False
        self.expires[session_id] = self.now() + lease_seconds
        self.renewals.append(turn_id)
        return True

    async def take_lapsed(
        self, session_id: str, turn_id: str, closer_id: str, *, lease_seconds: int
    ) -> ChatSession | None:
        stored = self.sessions.get(session_id)
        if stored is None or stored.active_turn_id != turn_id or not self.lapsed(session_id):
            return None
        stored.active_turn_id = closer_id
        self.expires[session_id] = self.now() + lease_seconds
        stored.version += 1
        return _copy(stored)

    async def release(self, session_id: str, turn_id: str) -> None:
        stored = self.sessions.get(session_id)
        if stored is not None and stored.active_turn_id == turn_id:
            stored.active_turn_id = None
            stored.version += 1
            self.released.append(turn_id)


class InMemoryApprovals:
    """``ApprovalRecords`` over a dict, with the store's conditional answer."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], Approval] = {}

    async def create(self, approval: Approval) -> None:
        self.records[(approval.session_id, approval.approval_id)] = approval

    async def get(self, session_id: str, approval_id: str) -> Approval | None:
        return self.records.get((session_id, approval_id))

    async def answer(self, approval: Approval, *, now: int, before_deadline: bool = True) -> bool:
        stored = self.records.get((approval.session_id, approval.approval_id))
        if stored is None or stored.state != "pending" or (before_deadline and stored.deadline <= now):
            return False
        self.records[(approval.session_id, approval.approval_id)] = approval
        return True


@dataclass
class InMemoryUserContexts:
    """``UserContexts``: each user's context text, over the sessions fake; records the reads the engine made."""

    sessions: InMemorySessions
    texts: dict[str, str] = field(default_factory=dict)
    reads: list[tuple[str, str, str | None]] = field(default_factory=list)  # (kind, session id or "", user)

    async def session_with_context(self, session_id: str, user_id: str | None) -> tuple[ChatSession | None, str]:
        self.reads.append(("session+context", session_id, user_id))
        found = await self.sessions.get_chat_session(session_id)  # a turn reads its working set
        return (found.working_set() if found is not None else None), self.texts.get(user_id or "", "")

    async def context_of(self, user_id: str | None) -> str:
        self.reads.append(("context", "", user_id))
        return self.texts.get(user_id or "", "")


@dataclass
class InMemoryReplay:
    """``ReplayLog``: the log of each turn as a list (None marks its end), pointers and cancel flags."""

    logs: dict[str, list[str | None]] = field(default_factory=dict)
    active: dict[str, str] = field(default_factory=dict)
    cmids: dict[tuple[str, str], str] = field(default_factory=dict)
    cancels: set[str] = field(default_factory=set)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def enabled(self) -> bool:
        return True

    def available(self) -> bool:
        return True

    async def begin(self, session_id: str, turn_id: str, client_message_id: str | None) -> bool:
        self.active[session_id] = turn_id
        self.logs.setdefault(turn_id, [])
        if client_message_id:
            self.cmids[(session_id, client_message_id)] = turn_id
        return True

    async def append(self, turn_id: str, chunks: list[str]) -> None:
        self.logs.setdefault(turn_id, []).extend(chunks)
        self._wake()

    async def end(self, session_id: str, turn_id: str, last: Sequence[str] = ()) -> None:
        self.logs.setdefault(turn_id, []).extend([*last, None])
        if self.active.get(session_id) == turn_id:
            del self.active[session_id]
        self.cancels.discard(turn_id)
        self._wake()

    async def active_turn(self, session_id: str) -> str | None:
        return self.active.get(session_id)

    async def turn_of_client_message(self, session_id: str, client_message_id: str) -> str | None:
        return self.cmids.get((session_id, client_message_id))

    async def read(self, turn_id: str, after: str, *, block_ms: int) -> list[LogEntry] | None:
        start = int(after.split("-")[1]) + 1 if after != "0-0" else 0
        entries = self.logs.get(turn_id, [])
        if len(entries) <= start:
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), block_ms / 1000)
            except TimeoutError:
                return []
        return [LogEntry(f"1-{i}", chunk) for i, chunk in enumerate(self.logs[turn_id]) if i >= start]

    async def exists(self, turn_id: str) -> bool:
        return turn_id in self.logs

    async def ended(self, turn_id: str) -> bool:
        log = self.logs.get(turn_id)
        return log is None or (bool(log) and log[-1] is None)

    async def close_unless_ended(self, session_id: str, turn_id: str, chunks: list[str]) -> bool:
        log = self.logs.get(turn_id)
        if self.active.get(session_id) == turn_id:
            del self.active[session_id]
        self.cancels.discard(turn_id)
        if log is None or (log and log[-1] is None):
            return False
        log.extend([*chunks, None])
        self._wake()
        return True

    async def request_cancel(self, turn_id: str) -> bool:
        self.cancels.add(turn_id)
        return True

    async def cancel_requested(self, turn_id: str) -> bool:
        return turn_id in self.cancels

    def _wake(self) -> None:
        self.changed.set()


# A scripted model call: what it yields, in order. An exception instance is raised at that point; HANG waits
# until the consumer stops reading (a silent model).
HANG = object()
Step = LLMDelta | Exception | object


def text(*pieces: str, usage: Usage | None = None, reason: str = "stop") -> list[Step]:
    return [
        *(TextDelta(p) for p in pieces),
        Finished(reason, usage or Usage(prompt_tokens=5, completion_tokens=3, total_tokens=8)),
    ]


def tool_call(call_id: str, name: str, arguments: str) -> list[Step]:
    return [
        ToolCallDelta(0, call_id, name, ""),
        ToolCallDelta(0, None, None, arguments),
        Finished("tool_calls", Usage(prompt_tokens=4, completion_tokens=2, total_tokens=6)),
    ]


@dataclass
class ScriptedModel:
    """``ChatModel``: each ``stream()`` call plays the next script; ``complete()`` answers titles/summaries."""

    scripts: list[list[Step]] = field(default_factory=list)
    # What complete() answers (titles, summaries); an exception is raised instead.
    answer: Callable[[list[dict[str, Any]]], str | Exception] = lambda messages: "A Fine Title"
    requests: list[dict[str, Any]] = field(default_factory=list)
    completions: list[list[dict[str, Any]]] = field(default_factory=list)
    closed_streams: int = 0
    complete_delay: float = 0.0  # seconds each ``complete()`` (a title, a summary) takes

    @property
    def title_model(self) -> str:
        return "title-model"

    def stream(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | None = None,
        model: str | None = None,
        deadline: float | None = None,
    ) -> AsyncIterator[LLMDelta]:
        self.requests.append({"messages": messages, "tools": tools, "tool_choice": tool_choice, "deadline": deadline})
        script = self.scripts.pop(0) if self.scripts else text("(no script)")
        return self._play(script)

    async def _play(self, script: list[Step]) -> AsyncIterator[LLMDelta]:
        try:
            for step in script:
                if step is HANG:
                    await asyncio.Event().wait()
                if isinstance(step, asyncio.Event):  # wait until the test sets it, then go on
                    await step.wait()
                    continue
                if isinstance(step, Exception):
                    raise step
                yield step  # type: ignore[misc]
                await asyncio.sleep(0)
        finally:
            self.closed_streams += 1

    async def complete(
        self, messages: list[dict[str, Any]], *, model: str | None = None, max_tokens: int = 256
    ) -> tuple[str, Usage | None]:
        self.completions.append(messages)
        await asyncio.sleep(self.complete_delay)
        answer = self.answer(messages)
        if isinstance(answer, Exception):
            raise answer
        return answer, None

    async def aclose(self) -> None:
        return None


# -- long-running tools ---------------------------------------------------------------------------------------


@dataclass
class InMemoryRecords:
    """``OperationRecordStore``: records with conditional transitions, and used callback signatures."""

    records: dict[str, Any] = field(default_factory=dict)  # operation id -> Operation
    signatures: set[str] = field(default_factory=set)

    async def get(self, operation_id: str) -> Any:
        found = self.records.get(operation_id)
        return dataclasses.replace(found) if found is not None else None

    async def create(self, operation: Any) -> Any:
        if operation.operation_id in self.records:
            return dataclasses.replace(self.records[operation.operation_id])
        self.records[operation.operation_id] = dataclasses.replace(operation)
        return None

    async def transition(
        self, operation_id: str, to: str, *, expect: set[str], extra: dict[str, Any] | None = None
    ) -> bool:
        record = self.records.get(operation_id)
        if record is None or record.status not in expect:
            return False
        record.status = to
        for name, value in (extra or {}).items():
            setattr(record, name, value)
        return True

    async def of_session(self, session_id: str) -> list[str]:
        return [op_id for op_id, record in self.records.items() if record.session_id == session_id]

    async def claim_signature(self, digest: str, *, expires_at: int) -> bool:
        if digest in self.signatures:
            return False
        self.signatures.add(digest)
        return True


@dataclass
class FakeExecutions:
    """``ExecutionControl``: what was started, stopped and sent; ``refuse`` makes the next call fail like AWS."""

    state_machine_arn: str = "arn:aws:states:us-east-1:123456789012:stateMachine:ops"
    started: dict[str, dict[str, Any]] = field(default_factory=dict)
    stopped: list[str] = field(default_factory=list)
    sent: list[tuple[str, str, Any]] = field(default_factory=list)  # (kind, token, payload)
    refuse: str | None = None  # an AWS error code the next call answers with

    def arn_of(self, name: str) -> str:
        return self.state_machine_arn.replace(":stateMachine:", ":execution:") + f":{name}"

    def _maybe_refuse(self) -> None:
        if self.refuse is not None:
            code, self.refuse = self.refuse, None
            raise ServiceRefused(f"Step Functions request failed ({code})", aws_code=code)

    async def start(self, name: str, execution_input: dict[str, Any]) -> str:
        self._maybe_refuse()
        self.started[name] = execution_input
        return self.arn_of(name)

    async def stop(self, name: str, *, error: str, cause: str) -> None:
        self._maybe_refuse()
        self.stopped.append(name)

    async def succeed(self, task_token: str, output: Any) -> None:
        self._maybe_refuse()
        self.sent.append(("success", task_token, output))

    async def fail(self, task_token: str, *, error: str, cause: str) -> None:
        self._maybe_refuse()
        self.sent.append(("failure", task_token, cause))

    async def heartbeat(self, task_token: str) -> None:
        self._maybe_refuse()
        self.sent.append(("heartbeat", task_token, None))


@dataclass
class InMemoryGuard:
    """``StartGuard``: SET NX semantics."""

    held: set[str] = field(default_factory=set)

    async def take(self, operation_id: str) -> bool:
        if operation_id in self.held:
            return False
        self.held.add(operation_id)
        return True

    async def release(self, operation_id: str) -> None:
        self.held.discard(operation_id)
