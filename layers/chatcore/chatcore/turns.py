"""One chat turn, from the user's message to the persisted answer.

1. Load the session's working set (the recent part of its active path, ``ChatSession.working_set``) through the
   cache (another user's is ``NotFound``), with the caller's user context in the same round trip; a resent client
   message id attaches to the turn it started instead of starting a second one. A decision about an older message
   plans again over the whole path (``intents.NeedsWholePath``).
2. Take the turn lease on META (one conditional write): a concurrent turn gets ``TurnInProgress`` (409). The lease
   is short (``TURN_LEASE_SECONDS``) and renewed while the turn runs; a crashed function stops renewing it, so its
   session is free again within the lease, and a stop, resume or resend of that dead turn closes it
   (``close_lapsed``: what it streamed is stored as ``interrupted`` and its replay log ended).
3. Start the LLM request, and persist the user message *concurrently*: the first token does not wait for the
   write, but nothing is streamed (acknowledged) before the write succeeded.
4. Stream: every event goes, in order, to the live listeners and to the turn's replay log. Sync tools run here and
   loop back to the LLM (bounded rounds); each round's tool calls and results are persisted together, so the
   history never holds a tool call without its result.
5. Persist the answer and usage and release the lease in the same transaction; emit ``finish``.
6. Failures: the LLM client retries only before output. After output, what was produced is persisted as
   ``partial``, an ``error`` chunk and ``finish`` follow. A stop request does the same without the error; it takes
   effect at once in every phase (the model's pending read, a retry's backoff, a running tool are cancelled).

The turn runs as its own task: a client that goes away does not stop it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from chatcore import lapsed
from chatcore.approvals import EXPIRED, SUPERSEDED, Approval, ApprovalAnswer, check, denial, waiting_on_path
from chatcore.context import Context, build_context, with_user_context
from chatcore.errors import (
    ChatError,
    Conflict,
    DuplicateClientMessage,
    NeedsWholePath,
    NotFound,
    ServiceUnavailable,
    TurnInProgress,
)
from chatcore.intents import (
    Edit,
    Intent,
    NewMessage,
    Plan,
    Regenerate,
    RegenerateAnswer,
    Resend,
    Send,
    plan_turn,
)
from chatcore.llm import Finished, LLMDelta, LLMError, TextDelta, ToolCallDelta
from chatcore.models import ChatMessage, ChatSession, Usage, client_key, new_id
from chatcore.observability import logger
from chatcore.replay import TurnChannel
from chatcore.stream import (
    FinishReason,
    StreamError,
    StreamEvent,
    StreamFinish,
    StreamFinishStep,
    StreamStart,
    StreamStartStep,
    StreamTextDelta,
    StreamTextEnd,
    StreamTextStart,
)
from chatcore.titles import TitleTask
from chatcore.tool_rounds import PendingCall, ToolRounds, unless_stopped
from chatcore.turn_recorder import TurnRecorder
from chatcore.turn_types import ChatDeps, ExistingTurn, TurnHandle

ERROR_TEXT = "The assistant could not finish this reply. Please try again."
CANCEL_POLL_SECONDS = 0.5
# How long a turn lets its model request go out before it writes the lease (see ``ChatEngine._head_start``).
REQUEST_HEAD_START_SECONDS = 0.01
FUNCTION_RESERVE_SECONDS = 10.0  # kept at the end of the function's time to store what a failed turn produced
RESEND_WAIT_STEPS, RESEND_WAIT_SECONDS = 20, 0.05  # a concurrent copy waits up to ~1 s for its turn's pointer
_FINISH_REASONS: dict[str, FinishReason] = {"tool_calls": "tool-calls", "length": "length"}


@dataclass
class ModelStep:
    """What one model call produced."""

    text: str = ""
    calls: dict[int, PendingCall] = field(default_factory=dict)
    usage: Usage = field(default_factory=Usage)
    finish_reason: FinishReason = "stop"
    failed: LLMError | None = None


class _Prefetch:
    """Start consuming an async iterator now (the LLM request goes out) and hand the items over later."""

    def __init__(self, source: AsyncIterator[LLMDelta]) -> None:
        self._source = source
        self._first: asyncio.Task[LLMDelta] = asyncio.create_task(anext(source))  # type: ignore[arg-type]

    def __aiter__(self) -> AsyncIterator[LLMDelta]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[LLMDelta]:
        try:
            yield await self._first
        except StopAsyncIteration:
            return
        async for item in self._source:
            yield item

    async def aclose(self) -> None:
        self._first.cancel()
        with contextlib.suppress(BaseException):
            await self._first
        with contextlib.suppress(BaseException):
            await self._source.aclose()  # type: ignore[attr-defined]


async def _until(stream: AsyncIterable[LLMDelta], stop: asyncio.Event) -> AsyncGenerator[LLMDelta]:
    """The stream's deltas until ``stop`` is set — also while the model is silent (before its first token, or in
    the client's retry backoff): the pending read is cancelled at once, which closes the HTTP request.

    The deltas are read in the caller's task (no task per delta): a stop that finds a read pending cancels the
    task, and the cancellation is taken back here; one that comes between two reads ends the loop."""
    iterator = aiter(stream)
    task = asyncio.current_task()
    assert task is not None
    reading = False
    cancelled = False

    def interrupt(_: object) -> None:
        nonlocal cancelled
        if reading and not cancelled:
            cancelled = True
            task.cancel()

    watcher = asyncio.ensure_future(stop.wait())
    watcher.add_done_callback(interrupt)
    try:
        while not stop.is_set():
            reading = True
            try:
                item = await anext(iterator)
            except StopAsyncIteration:
                return
            except asyncio.CancelledError:
                if cancelled:
                    cancelled = False
                    if task.uncancel() == 0:
                        return  # the stop's own cancellation: the read is abandoned
                raise
            finally:
                reading = False
            yield item
    finally:
        watcher.remove_done_callback(interrupt)
        watcher.cancel()
        if cancelled:  # the read returned although cancelled (the source swallowed it): take it back all the same
            task.uncancel()


async def _silence() -> AsyncIterator[LLMDelta]:
    """A model stream that says nothing (a turn stopped before its model request)."""
    nothing: tuple[LLMDelta, ...] = ()
    for delta in nothing:
        yield delta


async def _close(stream: AsyncIterable[LLMDelta]) -> None:
    close = getattr(stream, "aclose", None)
    if close is not None:
        with contextlib.suppress(Exception):
            await close()


class ChatEngine:
    def __init__(self, deps: ChatDeps) -> None:
        self.deps = deps
        self.rounds = ToolRounds(deps)
        self.running: dict[str, TurnHandle] = {}

    # -- entry points ---------------------------------------------------------------------------------------

    async def start_turn(
        self,
        session_id: str,
        text: str,
        *,
        user_id: str | None,
        client_message_id: str | None = None,
        create: bool = False,
    ) -> TurnHandle | ExistingTurn:
        """A turn for a user message (new, resent or edited); see ``submit``."""
        return await self.submit(session_id, NewMessage(text, client_message_id), user_id=user_id, create=create)

    async def submit(
        self, session_id: str, intent: Intent, *, user_id: str | None, create: bool = False
    ) -> TurnHandle | ExistingTurn:
        """Start the turn ``intent`` asks for (``chatcore.intents``: send, resend, edit, regenerate); raises
        ``ChatError`` (404, 409, 422, ...) before anything is streamed."""
        return await self._submit(session_id, intent, user_id=user_id, create=create, whole=False)

    async def _submit(
        self, session_id: str, intent: Intent, *, user_id: str | None, create: bool, whole: bool
    ) -> TurnHandle | ExistingTurn:
        """``submit`` over the working set, or over the whole active path (``whole``)."""
        deps = self.deps
        session, user_context = await self._load_or_create(session_id, user_id, create, whole)
        try:
            session, plan = await self._plan(session, intent, fresh=False)
        except ChatError as refusal:
            session = await self._recheck(session, refusal)
            plan = plan_turn(session, intent)  # DynamoDB's whole path
        # A new message's id was not among the recent messages read: it may still be an older one's (resent or
        # edited), which its write tells (``DuplicateClientMessage``) — then the turn is planned over the whole path.
        unsure = isinstance(plan, Send) and plan.client_message_id is not None and session.misses_older()
        if isinstance(plan, Resend):
            return await self._resend(session, plan.client_key)
        turn_id = new_id("turn_")
        # The model request goes out now, concurrently with the lease write (and later the user message's): the
        # first token does not wait for either. A refused lease cancels it before any byte reaches the client.
        read_version = session.version
        deadline = self._deadline()  # the turn's, from its start
        early = not waiting_on_path(session)
        read_messages = list(session.messages)
        opening = self._open_early(session, plan, turn_id, user_context, deadline) if early else None
        prepared = session.messages
        await _head_start(opening)
        try:
            session = await deps.leases.take(
                session, turn_id, owner=user_id, lease_seconds=deps.settings.turn_lease_seconds
            )
        except BaseException as exc:
            await _discard(opening)
            if isinstance(exc, TurnInProgress) and (key := _client_key(plan)):
                # A resend of the running turn's own message attaches to it; anything else is a real 409.
                existing = await self._await_existing(session_id, key)
                if existing is not None:
                    return existing
            raise
        if opening is not None and session.version != read_version + 1:
            await _discard(opening)  # written since it was read: the history the request carries may be stale
            opening = None
            if session.messages is prepared:  # not read again (no new message): plan over what was read
                session.messages = read_messages
        elif opening is not None:
            session.messages = prepared  # only the lease changed since the read: the prepared history stands
        if opening is None:
            try:
                session, plan = await self._plan(session, intent, fresh=True)  # the session as the lease found it
            except ChatError:
                await deps.leases.release(session_id, turn_id)
                raise
            if isinstance(plan, Resend):
                await deps.leases.release(session_id, turn_id)
                return await self._existing(session_id, plan.client_key)
            if isinstance(plan, Send) and waiting_on_path(session):
                try:
                    session = await self._deny_waiting(session)
                except BaseException:
                    await deps.leases.release(session_id, turn_id)
                    raise
            branch_from = _prepare(session, plan, turn_id)
        else:
            branch_from = opening.branch_from
        handle = self._launch(
            session,
            turn_id,
            user_id,
            depth=0,
            branch_from=branch_from,
            user_context=user_context,
            opening=opening.task if opening is not None else None,
            deadline=deadline,
        )
        try:
            await asyncio.shield(handle.accepted)
        except DuplicateClientMessage:
            if unsure and isinstance(plan, Send):
                return await self._submit(session_id, intent, user_id=user_id, create=False, whole=True)
            return await self._existing(session_id, _client_key(plan) or "")
        return handle

    async def _recheck(self, session: ChatSession, refusal: ChatError) -> ChatSession:
        """DynamoDB's copy, to decide ``refusal`` again: ``session`` may be a cached copy that lacks a write whose
        write-through failed. Raises ``refusal`` when nothing was written since."""
        fresh = await self.deps.sessions.load_fresh(session.session_id)
        if fresh is None or fresh.user_id != session.user_id:
            raise NotFound("session not found")
        if fresh.version == session.version:
            raise refusal
        return fresh

    async def _plan(self, session: ChatSession, intent: Intent, *, fresh: bool) -> tuple[ChatSession, Plan]:
        """``plan_turn`` over ``session``; over the whole active path when the decision needs older messages
        (read from DynamoDB when ``fresh``: the session as the lease found it)."""
        try:
            return session, plan_turn(session, intent)
        except NeedsWholePath:
            sessions = self.deps.sessions
            load = sessions.load_fresh if fresh else sessions.get_chat_session
            whole = await load(session.session_id)
            if whole is None or whole.user_id != session.user_id:
                raise NotFound("session not found") from None
            if fresh:
                whole.active_turn_id = session.active_turn_id
            return whole, plan_turn(whole, intent)

    def _deadline(self) -> float | None:
        """When this turn's model attempts must be done: the function's timeout less the time to store the answer."""
        timeout = self.deps.settings.function_timeout_seconds
        if timeout <= 0:
            return None
        return asyncio.get_running_loop().time() + max(1.0, timeout - FUNCTION_RESERVE_SECONDS)

    def _open_early(
        self, session: ChatSession, plan: Plan, turn_id: str, user_context: str, deadline: float | None
    ) -> _Early:
        """Prepare ``session`` for ``plan`` and start building the context and the model request at once."""
        branch_from = _prepare(session, plan, turn_id)
        return _Early(asyncio.create_task(self._open(session, user_context, deadline)), branch_from)

    async def _open(self, session: ChatSession, user_context: str, deadline: float | None) -> _Opened:
        """The history this turn needs (summarised once when it outgrows the budget), then the model request."""
        deps = self.deps
        context = await build_context(
            session,
            with_user_context(deps.system_prompt(), user_context),
            budget_tokens=deps.settings.llm_context_tokens,
            summarise=self._summarise,
        )
        tool_schemas = deps.tools.openai_tools()
        stream = _Prefetch(deps.llm.stream(context.messages, tools=tool_schemas or None, deadline=deadline))
        await asyncio.sleep(0)  # the prefetch's first step, which writes the request, runs before this returns
        return _Opened(context, stream, tool_schemas)

    async def answer_approvals(
        self, session_id: str, answers: list[ApprovalAnswer], *, user_id: str | None
    ) -> TurnHandle | ExistingTurn:
        """Answer tool approvals (``chatcore.approvals``) and continue the assistant message that asked, as a new
        run streamed like a turn. Raises ``ChatError`` (404, 409, 422) before anything is streamed."""
        deps, approvals = self.deps, self.deps.approvals
        session = await self.deps.sessions.working_set_of(session_id, user_id)
        if session is None or approvals is None:
            raise NotFound("session not found")
        records = {a.approval_id: await approvals.get(session_id, a.approval_id) for a in answers}
        repeated = _answered_before(records, answers)
        if repeated is not None:  # the same answers again (a retried POST): replay the run they started
            with contextlib.suppress(DuplicateClientMessage):
                return await self._existing_run(session_id, repeated)
            raise Conflict("these approvals were already answered")
        now = int(time.time())
        checked = [check(session, records[a.approval_id], a, now) for a in answers]
        run_id = new_id("turn_")
        session = await deps.leases.take(session, run_id, owner=user_id, lease_seconds=deps.settings.turn_lease_seconds)
        answered: list[tuple[ChatMessage, Approval]] = []
        for (waiting, record), answer in zip(checked, answers, strict=True):
            decided = record.answered(answer.approved, answer.reason, run_id)
            if not await approvals.answer(decided, now=now):
                await deps.leases.release(session_id, run_id)
                raise Conflict("this approval was already answered or expired")
            answered.append((waiting, decided))
        handle = self._launch(session, run_id, user_id, depth=0, answer_id=checked[0][1].answer_id)
        self._track(handle, asyncio.create_task(self._run_answer(handle, session, answered, user_id)))
        await asyncio.shield(handle.accepted)
        return handle

    async def continue_session(self, session_id: str, user_id: str | None, *, depth: int) -> TurnHandle:
        """A turn without a new user message: the assistant continues after a background tool's result.
        Raises ``TurnInProgress`` while another turn runs (the state machine retries)."""
        sessions = self.deps.sessions
        session = await sessions.load_working_set(session_id)
        if session is None:
            raise NotFound("session not found")
        turn_id = new_id("turn_")
        session = await self.deps.leases.take(
            session, turn_id, owner=user_id, lease_seconds=self.deps.settings.turn_lease_seconds
        )
        user_context = await self.deps.contexts.context_of(session.user_id)
        handle = self._launch(session, turn_id, user_id, depth=depth, user_context=user_context)
        await asyncio.shield(handle.accepted)
        return handle

    def _launch(
        self,
        session: ChatSession,
        turn_id: str,
        user_id: str | None,
        *,
        depth: int,
        branch_from: int | None = None,
        answer_id: str | None = None,
        user_context: str = "",
        opening: asyncio.Task[_Opened] | None = None,
        deadline: float | None = None,
    ) -> TurnHandle:
        """Register the run; it starts as a turn unless ``answer_id`` says it continues another's message (the
        caller starts it)."""
        channel = TurnChannel(self.deps.replay, session.session_id, turn_id)  # stores each event's stored form
        accepted = asyncio.get_running_loop().create_future()
        handle = TurnHandle(session.session_id, turn_id, channel, accepted, depth=depth, answer_id=answer_id or "")
        handle.deadline = deadline if deadline is not None else self._deadline()
        self.running[turn_id] = handle
        handle.keeper = asyncio.create_task(self._attend(handle))
        if answer_id is None:
            self._track(
                handle, asyncio.create_task(self._run(handle, session, user_id, branch_from, user_context, opening))
            )
        return handle

    def _track(self, handle: TurnHandle, task: asyncio.Task[None]) -> None:
        """``task`` runs ``handle``'s turn: when it ends the turn is no longer running and its lease not renewed."""
        handle.task = task

        def ended(_: asyncio.Task[None]) -> None:
            self.running.pop(handle.turn_id, None)
            if handle.keeper is not None:
                handle.keeper.cancel()

        task.add_done_callback(ended)

    async def stream_chat_completion(
        self, session_id: str, message: str, user_id: str | None = None, *, client_message_id: str | None = None
    ) -> AsyncIterator[StreamEvent]:
        """The turn as an async generator of stream events; the session is persisted when it ends. With the id
        of a stored user message and other text, this is an edit (a new version of that message)."""
        intent = NewMessage(message, client_message_id)
        started = await self.submit(session_id, intent, user_id=user_id)
        async for event in _events(started, client_message_id):
            yield event

    async def regenerate(
        self, session_id: str, user_id: str | None = None, *, message_id: str | None = None
    ) -> AsyncIterator[StreamEvent]:
        """Answer again (``chatcore.intents``): the answer ``message_id`` names (its turn id), the answer to a user
        message, or — without it — the last answer; the old one is kept as a version."""
        started = await self.submit(session_id, RegenerateAnswer(message_id), user_id=user_id)
        async for event in _events(started, None):
            yield event

    async def approve(
        self,
        session_id: str,
        approval_id: str,
        approved: bool,
        user_id: str | None = None,
        *,
        reason: str | None = None,
    ) -> AsyncIterator[StreamEvent]:
        """Answer a tool approval (``chatcore.approvals``) and stream the continuation of the message that asked."""
        started = await self.answer_approvals(
            session_id, [ApprovalAnswer(approval_id, approved, reason)], user_id=user_id
        )
        async for event in _events(started, None):
            yield event

    async def stop(self, session_id: str, user_id: str | None) -> Stopping | None:
        """Stop the session's active turn: one of this process is cancelled at once, another's through its cancel
        flag (it polls it every ``CANCEL_POLL_SECONDS``), a dead one (lapsed lease) is closed here. None when
        nothing runs; ``ServiceUnavailable`` when the turn runs elsewhere and the cache cannot carry the flag."""
        deps = self.deps
        session = await deps.sessions.working_set_of(session_id, user_id)
        if session is None:
            raise NotFound("session not found")
        for handle in self.running.values():
            if handle.session_id == session_id:
                handle.cancel.set()
                await deps.replay.request_cancel(handle.turn_id)
                return Stopping(handle.turn_id)
        turn_id = await deps.replay.active_turn(session_id)
        if turn_id is not None and await self.close_lapsed(session_id, turn_id, stopped=True):
            return Stopping(turn_id, closed=True)
        held_by = await deps.sessions.active_turn_id(session_id)  # a lapsed lease reads as none
        if held_by is None:
            if turn_id is not None and await self.close_lapsed(session_id, turn_id, stopped=True):
                return Stopping(turn_id, closed=True)  # it lapsed between the two reads
            return None  # nothing holds the session: nothing runs that a flag could stop
        if await deps.replay.request_cancel(held_by):
            return Stopping(held_by)
        raise ServiceUnavailable("the stop could not be delivered (the cache is unavailable); the reply goes on")

    async def close_lapsed(self, session_id: str, turn_id: str, *, stopped: bool) -> bool:
        """Close ``turn_id`` if its lease lapsed (``chatcore.lapsed.close_lapsed``); False when it was not dead."""
        return await lapsed.close_lapsed(self.deps, session_id, turn_id, stopped=stopped)

    async def close_abandoned(self, session_id: str, turn_id: str) -> bool:
        """End the log of a dead turn whose lease another took (``chatcore.lapsed.close_abandoned``); never of a
        turn running in this process."""
        if turn_id in self.running:
            return False
        return await lapsed.close_abandoned(self.deps, session_id, turn_id)

    async def aclose(self) -> None:
        """Wait for running turns to finish, then close the LLM client."""
        tasks = [h.task for h in self.running.values() if h.task is not None]
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        await self.deps.llm.aclose()

    # -- steps ----------------------------------------------------------------------------------------------

    async def _load_or_create(
        self, session_id: str, user_id: str | None, create: bool, whole: bool = False
    ) -> tuple[ChatSession, str]:
        """The caller's session — its working set, or the whole active path when ``whole`` — (created when
        ``create``) and the caller's context, read with it."""
        sessions, contexts = self.deps.sessions, self.deps.contexts
        if whole:
            session, user_context = await sessions.get_chat_session(session_id), await contexts.context_of(user_id)
        else:
            session, user_context = await contexts.session_with_context(session_id, user_id)
        if session is None and create:
            with contextlib.suppress(ChatError):  # lost a creation race, or a deleted id: decided below
                session = await sessions.upsert_chat_session(ChatSession.new(user_id, session_id=session_id))
            if session is None:
                session = await sessions.get_chat_session(session_id)
        if session is None or session.user_id != user_id:
            raise NotFound("session not found")
        return session, user_context

    async def _resend(self, session: ChatSession, client_key: str) -> ExistingTurn:
        """The turn a stored message started. While a turn runs, its message can be stored a moment before the turn
        registers it in the replay log: wait for that briefly instead of answering 409."""
        if session.active_turn_id is not None:
            existing = await self._await_existing(session.session_id, client_key)
            if existing is not None:
                return existing
        return await self._existing(session.session_id, client_key)

    async def _await_existing(self, session_id: str, client_message_id: str) -> ExistingTurn | None:
        """The running turn this message started, waiting briefly: a copy sent at the same moment as the first can
        find the lease taken before that turn has registered its client message id."""
        for _ in range(RESEND_WAIT_STEPS):
            with contextlib.suppress(NotFound, DuplicateClientMessage):
                return await self._existing(session_id, client_message_id)
            await asyncio.sleep(RESEND_WAIT_SECONDS)
        return None

    async def _existing(self, session_id: str, client_message_id: str) -> ExistingTurn:
        turn_id = await self.deps.replay.turn_of_client_message(session_id, client_message_id)
        if turn_id is None or not await self.deps.replay.exists(turn_id):
            raise DuplicateClientMessage(
                "this message was already sent and its reply is stored", client_message_id=client_message_id, seq=None
            )
        return ExistingTurn(session_id, turn_id)

    def _recorder(self, session: ChatSession, handle: TurnHandle, *, branch_from: int | None = None) -> TurnRecorder:
        """The writer of ``handle``'s turn (its last write retries throttling: ``ANSWER_WRITE_RETRY_SECONDS``)."""
        deps = self.deps
        return TurnRecorder(
            deps.sessions,
            deps.leases,
            session,
            handle.turn_id,
            branch_from=branch_from,
            answer_id=handle.answer_id,
            retry_seconds=deps.settings.answer_write_retry_seconds,
        )

    async def _run(
        self,
        handle: TurnHandle,
        session: ChatSession,
        user_id: str | None,
        branch_from: int | None,
        user_context: str,
        opening: asyncio.Task[_Opened] | None = None,
    ) -> None:
        deps = self.deps
        recorder = self._recorder(session, handle, branch_from=branch_from)
        handle.recorder = recorder
        new_message = bool(session.messages) and session.messages[-1].seq is None
        is_first = new_message and session.message_count == 0 and not session.title
        user_text = next((m.content or "" for m in reversed(session.messages) if m.role == "user"), "")
        stream: _Prefetch | None = None
        begin: asyncio.Task[bool] | None = None
        if opening is None:
            opening = asyncio.create_task(self._open(session, user_context, handle.deadline))
        try:
            # 3. The user message is stored while the model request (opened already, or now) goes out.
            last = session.messages[-1] if new_message else None
            client_message_id = client_key(last) if last is not None and last.client_message_id else None
            begin = asyncio.create_task(deps.replay.begin(session.session_id, handle.turn_id, client_message_id))
            if new_message:
                await recorder.user_message()
            opened = await unless_stopped(opening, handle.cancel)
            if opened is None:  # stopped while the history was prepared (a summary): no model request is made
                opened = _Opened(Context(messages=[]), _Prefetch(_silence()), [])
            context, stream, tool_schemas = opened.context, opened.stream, opened.tool_schemas
        except BaseException as exc:
            await _discard(_Early(opening, None))
            if stream is not None:
                await stream.aclose()
            if begin is not None:
                await begin
            await recorder.release()
            await handle.channel.close()
            failure = exc if isinstance(exc, ChatError) else ChatError("could not start the reply")
            handle.accepted.set_exception(failure)
            if not isinstance(exc, ChatError | Exception):
                raise
            if not isinstance(exc, ChatError):
                logger.exception("turn could not start", turn_id=handle.turn_id)
            return
        handle.accepted.set_result(None)
        await begin
        summary: asyncio.Task[None] | None = None
        if context.new_summary:
            # Carried by the session this turn writes (and caches) too: the next turn's working set starts there.
            recorder.session.context_summary, recorder.session.summary_seq = context.new_summary, context.summary_seq
            summary = asyncio.create_task(
                deps.sessions.set_summary(session.session_id, context.new_summary, context.summary_seq)
            )
        if is_first:
            recorder.title = TitleTask.start(deps.llm, user_text, budget_seconds=deps.settings.title_timeout_seconds)
        try:
            await self._converse(handle, recorder, context.messages, stream, tool_schemas, user_id)
        finally:
            await handle.channel.close()
            if summary is not None:
                with contextlib.suppress(ChatError):
                    await summary

    async def _run_answer(
        self,
        handle: TurnHandle,
        session: ChatSession,
        answered: list[tuple[ChatMessage, Approval]],
        user_id: str | None,
    ) -> None:
        """An approval's answer: each call's output (run, started in the background, or denied) replaces its
        placeholder; then, when no call of the round still waits, the model continues the same message."""
        deps, publish = self.deps, handle.channel.publish
        recorder = self._recorder(session, handle)
        handle.recorder = recorder
        try:
            await deps.replay.begin(session.session_id, handle.turn_id, None)
        except BaseException as exc:
            await recorder.release()
            await handle.channel.close()
            handle.accepted.set_exception(exc if isinstance(exc, ChatError) else ChatError("could not answer"))
            if not isinstance(exc, Exception):
                raise
            return
        handle.accepted.set_result(None)
        publish(StreamStart(message_id=handle.answer_id))
        try:
            for waiting, approval in answered:
                message = await self.rounds.resolve(handle, session, waiting, approval, user_id)
                if not await self._settle(session, waiting, message):
                    raise ChatError("the approved call is no longer waiting")
                if message.status == "pending":
                    await self.rounds.start_operation(handle, session, message, user_id)
            asked = [m for m in session.messages if m.turn_id == handle.answer_id]
            unresolved = any(m.status in ("awaiting_approval", "pending") for m in asked)
            if not unresolved:
                prompt = with_user_context(deps.system_prompt(), await deps.contexts.context_of(session.user_id))
                context = await build_context(
                    session, prompt, budget_tokens=deps.settings.llm_context_tokens, summarise=None
                )
                tool_schemas = deps.tools.openai_tools()
                stream = deps.llm.stream(context.messages, tools=tool_schemas or None, deadline=handle.deadline)
        except Exception as exc:
            logger.warning("approval answer failed", turn_id=handle.turn_id, error=str(exc)[:200])
            publish(StreamError(error_text=ERROR_TEXT))
            unresolved, finish = True, StreamFinish(finish_reason="error")
        else:
            finish = StreamFinish(finish_reason="tool-calls")
        if unresolved:  # another call still waits (the model continues when it is answered), or this run failed
            await recorder.release()
            publish(finish)
            await handle.channel.close()
            return
        try:
            await self._converse(handle, recorder, context.messages, stream, tool_schemas, user_id, started=True)
        finally:
            await handle.channel.close()

    async def _deny_waiting(self, session: ChatSession) -> ChatSession:
        """A new message while calls wait for approval: each is denied first (expired, or the user moved on), so
        every call of the history has an output."""
        approvals, now = self.deps.approvals, int(time.time())
        for waiting in waiting_on_path(session):
            record = await approvals.get(session.session_id, waiting.approval_id or "") if approvals else None
            reason = EXPIRED if record is not None and record.deadline <= now else SUPERSEDED
            if record is not None and approvals is not None:
                await approvals.answer(record.answered(False, reason, ""), now=now, before_deadline=False)
            await self._settle(session, waiting, denial(waiting, reason))
        return session

    async def _settle(self, session: ChatSession, waiting: ChatMessage, message: ChatMessage) -> bool:
        """Store ``message`` in place of the approval placeholder ``waiting`` (only while it still waits) and in
        ``session``; False when it no longer waited."""
        assert waiting.seq is not None
        waits_for = ("pending_approval", waiting.approval_id or "")
        stored = await self.deps.sessions.replace_placeholder(
            session.session_id, waiting.seq, message, waiting=waits_for
        )
        if stored is None:
            return False
        session.messages = [message if m.seq == waiting.seq else m for m in session.messages]
        return True

    async def _existing_run(self, session_id: str, run_id: str) -> ExistingTurn:
        if not await self.deps.replay.exists(run_id):
            raise DuplicateClientMessage("this answer was already given", client_message_id="", seq=None)
        return ExistingTurn(session_id, run_id)

    async def _converse(
        self,
        handle: TurnHandle,
        recorder: TurnRecorder,
        messages: list[dict[str, Any]],
        stream: AsyncIterable[LLMDelta],
        tool_schemas: list[dict[str, Any]],
        user_id: str | None,
        *,
        started: bool = False,
    ) -> None:
        """Steps 4 to 7: stream each model step to the client and the replay log; run tool rounds (bounded); store the
        answer and give the lease back in one write; on failure or stop keep what was produced."""
        deps, publish, title = self.deps, handle.channel.publish, recorder.title
        usage, finish_reason, rounds = Usage(), "stop", 0
        if not started:
            publish(StreamStart(message_id=handle.answer_id))
        try:
            while True:
                publish(StreamStartStep())
                step = await self._model_step(handle, stream, title)
                usage = usage + step.usage
                finish_reason = step.finish_reason
                ready = [c for c in step.calls.values() if c.id and c.name]
                if step.failed or handle.cancel.is_set():
                    await recorder.partial(step.text, usage)
                    publish(StreamFinishStep())
                    if step.failed:
                        publish(StreamError(error_text=ERROR_TEXT))
                    finish_reason = "error" if step.failed else "stop"
                    break
                if not ready:
                    await recorder.answer(step.text, usage)
                    publish(StreamFinishStep())
                    break
                rounds += 1
                over_limit = rounds > deps.settings.max_tool_rounds
                session = recorder.session
                assistant, results = await self.rounds.run_tools(handle, session, step.text, ready, user_id, over_limit)
                pending = [r for r in results if r.status == "pending"]
                # A long-running tool's result comes with a new turn; an approval's answer continues this message.
                last_round = over_limit or bool(pending) or any(r.status == "awaiting_approval" for r in results)
                if last_round:
                    assistant.usage = usage
                session = await recorder.round(assistant, results, last=last_round)
                for message in pending:
                    await self.rounds.start_operation(handle, session, message, user_id)
                publish(StreamFinishStep())
                if handle.cancel.is_set() and not last_round:  # stopped while its tools ran: the round is stored
                    finish_reason = "stop"
                    break
                if last_round:
                    break
                messages = [*messages, assistant.to_openai(), *[r.to_openai() for r in results]]
                final = rounds >= deps.settings.max_tool_rounds
                choice = "none" if final else None
                stream = deps.llm.stream(messages, tools=tool_schemas, tool_choice=choice, deadline=handle.deadline)
        except ChatError as exc:
            logger.warning("turn failed", turn_id=handle.turn_id, error=exc.message)
            publish(StreamError(error_text=ERROR_TEXT))
            finish_reason = "error"
        except Exception:
            logger.exception("turn crashed", turn_id=handle.turn_id)
            publish(StreamError(error_text=ERROR_TEXT))
            finish_reason = "error"
        finally:
            await recorder.release()
        await title.finish(deps.sessions, recorder.session.session_id, publish)
        publish(StreamFinish(finish_reason=finish_reason))

    async def _model_step(self, handle: TurnHandle, stream: AsyncIterable[LLMDelta], title: TitleTask) -> ModelStep:
        """One model call streamed out: text deltas, tool-call fragments, its usage; a failure is kept, not raised."""
        publish = handle.channel.publish
        step = ModelStep()
        text_id: str | None = None
        try:
            async with contextlib.aclosing(_until(stream, handle.cancel)) as deltas:
                async for delta in deltas:
                    if isinstance(delta, TextDelta):
                        if text_id is None:
                            text_id = new_id("text_")
                            publish(StreamTextStart(id=text_id))
                        step.text += delta.text
                        publish(StreamTextDelta(id=text_id, delta=delta.text))
                    elif isinstance(delta, ToolCallDelta):
                        self.rounds.on_tool_delta(step.calls.setdefault(delta.index, PendingCall()), delta, publish)
                    elif isinstance(delta, Finished):
                        step.usage = step.usage + (delta.usage or Usage())
                        step.finish_reason = _FINISH_REASONS.get(delta.reason or "", "stop")
                        if delta.reason is None and not handle.cancel.is_set():
                            # The connection ended cleanly (or with [DONE] alone) without saying the answer was done.
                            step.failed = LLMError("the model's stream ended without a finish reason")
                    title.publish(publish)
        except LLMError as exc:
            step.failed = exc
        finally:
            await _close(stream)
        if text_id is not None:
            publish(StreamTextEnd(id=text_id))
        return step

    async def _attend(self, handle: TurnHandle) -> None:
        """What runs beside a turn for its whole life: its lease renewed, its cancel flag watched."""
        await asyncio.gather(self._keep_lease(handle), self._watch_cancel(handle))

    async def _keep_lease(self, handle: TurnHandle) -> None:
        """Renew the run's lease every ``TURN_LEASE_RENEW_SECONDS`` until it is given back. A renewal that finds the
        lease taken (it lapsed and a stop or resume closed the turn) stops the run: its writes would be refused."""
        deps = self.deps
        settings = deps.settings
        while True:
            await asyncio.sleep(settings.turn_lease_renew_seconds)
            if handle.recorder is not None and handle.recorder.released:
                return
            try:
                held = await deps.leases.renew(
                    handle.session_id, handle.turn_id, lease_seconds=settings.turn_lease_seconds
                )
            except ChatError as exc:  # the lease outlives one failed renewal: try again at the next interval
                logger.warning("lease renewal failed", turn_id=handle.turn_id, error=exc.message)
                continue
            if not held:
                if handle.recorder is None or not handle.recorder.released:
                    logger.warning("turn lost its lease", turn_id=handle.turn_id)
                    handle.cancel.set()
                return

    async def _watch_cancel(self, handle: TurnHandle) -> None:
        replay = self.deps.replay
        if not replay.enabled:
            return
        while not handle.cancel.is_set():
            await asyncio.sleep(CANCEL_POLL_SECONDS)
            if await replay.cancel_requested(handle.turn_id):
                handle.cancel.set()

    async def _summarise(self, messages: list[dict[str, Any]]) -> str:
        summary, _ = await self.deps.llm.complete(messages, model=self.deps.llm.title_model, max_tokens=400)
        return summary


def _client_key(plan: Plan) -> str | None:
    """The replay log's name for the user message a plan stores (a copy of it attaches to its turn)."""
    if isinstance(plan, Send):
        return plan.client_message_id
    if isinstance(plan, Edit):
        return client_key(_edited(plan, ""))
    return None


def _edited(plan: Edit, turn_id: str) -> ChatMessage:
    return ChatMessage(
        role="user",
        content=plan.text,
        client_message_id=plan.client_message_id,
        turn_id=turn_id,
        parent_seq=plan.parent_seq,
        edit_of=plan.of_seq,
    )


def _prepare(session: ChatSession, plan: Plan, turn_id: str) -> int | None:
    """Put the turn's starting point in ``session.messages`` (the history it answers); returns the seq the
    answer branches from when it is not the leaf (regenerate)."""
    if isinstance(plan, Send):
        user = ChatMessage(role="user", content=plan.text, client_message_id=plan.client_message_id, turn_id=turn_id)
        session.messages.append(user)
        return None
    if isinstance(plan, Edit):
        session.messages = session.path_to(plan.parent_seq) if plan.parent_seq else []
        session.messages.append(_edited(plan, turn_id))
        return None
    assert isinstance(plan, Regenerate)
    session.messages = session.path_to(plan.parent_seq) if plan.parent_seq else []
    return plan.parent_seq


def _answered_before(records: dict[str, Approval | None], answers: list[ApprovalAnswer]) -> str | None:
    """The run that gave exactly these answers already, if it did (a retried POST); None otherwise."""
    runs = set()
    for answer in answers:
        record = records.get(answer.approval_id)
        if record is None or record.state == "pending" or record.run_id is None:
            return None
        if (record.state == "approved") != answer.approved:
            return None
        runs.add(record.run_id)
    return runs.pop() if len(runs) == 1 else None


async def _events(started: TurnHandle | ExistingTurn, client_message_id: str | None) -> AsyncIterator[StreamEvent]:
    """A started run's events as they are published; its task is awaited at the end."""
    if isinstance(started, ExistingTurn):
        raise DuplicateClientMessage("this was already sent", client_message_id=client_message_id or "", seq=None)
    queue = started.channel.listen()
    while (item := await queue.get()) is not None:
        yield item.event
    if started.task is not None:
        await started.task


@dataclass(frozen=True)
class Stopping:
    """What a stop did: ``closed`` when the turn was dead (lapsed lease) and is closed now, else it is stopping."""

    turn_id: str
    closed: bool = False


@dataclass
class _Opened:
    """A turn's context and its model request, already sent."""

    context: Context
    stream: _Prefetch
    tool_schemas: list[dict[str, Any]]


@dataclass
class _Early:
    """A model request opened before the turn holds its lease, and where its answer branches from."""

    task: asyncio.Task[_Opened]
    branch_from: int | None


async def _head_start(early: _Early | None) -> None:
    """Let the model request go out before the lease write starts. The write's botocore call runs in a thread that
    competes with the request's own preparation for the interpreter: started first, it delayed the request by 1-3 ms
    on every turn. Bounded (``REQUEST_HEAD_START_SECONDS``): a history being summarised first does not hold the
    lease write back."""
    if early is not None:
        await asyncio.wait([early.task], timeout=REQUEST_HEAD_START_SECONDS)


async def _discard(early: _Early | None) -> None:
    """Cancel an opened (or opening) model request: its HTTP request is closed, nothing of it is streamed."""
    if early is None:
        return
    early.task.cancel()
    with contextlib.suppress(BaseException):
        opened = await early.task
        await opened.stream.aclose()
