"""One tool round of a chat turn: the LLM's tool calls as they stream in, running sync tools, and handing
long-running / callback tools to a background operation (a pending tool message now, the result later)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from chatcore.approvals import DENIED_BY_USER, Approval, arguments_of, denial
from chatcore.approvals import placeholder as approval_placeholder
from chatcore.errors import ChatError
from chatcore.lapsed import STOPPED_TOOL_TEXT
from chatcore.llm import ToolCallDelta
from chatcore.models import ChatMessage, ChatSession, ToolCall, ToolCallFunction
from chatcore.observability import logger
from chatcore.operations import Operation, operation_id_for
from chatcore.stream import (
    StreamData,
    StreamEvent,
    StreamToolApprovalRequest,
    StreamToolInputAvailable,
    StreamToolInputDelta,
    StreamToolInputStart,
    StreamToolOutputAvailable,
    StreamToolOutputDenied,
    StreamToolOutputError,
    approval_granted,
)
from chatcore.tools import ToolContext, ToolResult
from chatcore.turn_types import ChatDeps, TurnHandle


@dataclass
class PendingCall:
    id: str | None = None
    name: str | None = None
    arguments: str = ""
    announced: bool = False


def parse_input(arguments: str) -> Any:
    try:
        return json.loads(arguments or "{}")
    except json.JSONDecodeError:
        return arguments


def output_event(call_id: str, message: ChatMessage) -> StreamToolOutputAvailable | StreamToolOutputError:
    """The stream chunk of a tool result: what the client shows is what the LLM reads (``message.content``)."""
    try:
        output = json.loads(message.content or "null")
    except json.JSONDecodeError:  # cut to the size limit: the text as it is
        output = message.content
    if message.status != "error":
        return StreamToolOutputAvailable(tool_call_id=call_id, output=output)
    error = output.get("error") if isinstance(output, dict) else output
    return StreamToolOutputError(tool_call_id=call_id, error_text=str(error or "tool failed"))


class ToolRounds:
    def __init__(self, deps: ChatDeps) -> None:
        self.deps = deps

    def on_tool_delta(self, call: PendingCall, delta: ToolCallDelta, publish: Callable[[StreamEvent], None]) -> None:
        call.id = call.id or delta.id
        call.name = call.name or delta.name
        call.arguments += delta.arguments
        if not call.announced and call.id and call.name:
            call.announced = True
            publish(StreamToolInputStart(tool_call_id=call.id, tool_name=call.name))
            if call.arguments:
                publish(StreamToolInputDelta(tool_call_id=call.id, input_text_delta=call.arguments))
        elif call.announced and call.id and delta.arguments:
            publish(StreamToolInputDelta(tool_call_id=call.id, input_text_delta=delta.arguments))

    async def run_tools(
        self,
        handle: TurnHandle,
        session: ChatSession,
        text: str,
        calls: list[PendingCall],
        user_id: str | None,
        over_limit: bool,
    ) -> tuple[ChatMessage, list[ChatMessage]]:
        publish = handle.channel.publish
        tool_calls = [
            ToolCall(id=c.id or "", function=ToolCallFunction(name=c.name or "", arguments=c.arguments or "{}"))
            for c in calls
        ]
        assistant = ChatMessage(role="assistant", content=text or None, tool_calls=tool_calls, turn_id=handle.answer_id)
        ctx = ToolContext(user_id, session.session_id, {"sessions": self.deps.sessions})
        results: list[ChatMessage] = []
        for call in tool_calls:
            name, call_id = call.function.name, call.id
            publish(
                StreamToolInputAvailable(
                    tool_call_id=call_id, tool_name=name, input=parse_input(call.function.arguments)
                )
            )
            tool = self.deps.tools.get(name)
            if tool is not None and self.deps.tools.needs_approval(name) and not over_limit:
                results.append(await self._ask_approval(handle, session, call))
                continue
            if tool is not None and tool.kind != "sync" and not over_limit:
                results.append(self._pending_message(handle, session, call_id, name))
                continue
            if over_limit:
                result = ToolResult(False, {"error": "tool call limit reached for this reply"})
            elif handle.cancel.is_set():
                result = ToolResult(False, {"error": STOPPED_TOOL_TEXT})
            else:
                ran = await unless_stopped(self.deps.tools.run(name, call.function.arguments, ctx), handle.cancel)
                result = ran if ran is not None else ToolResult(False, {"error": STOPPED_TOOL_TEXT})
            message = result.to_message(call_id, name, turn_id=handle.answer_id)
            publish(output_event(call_id, message))
            results.append(message)
        return assistant, results

    def _pending_message(self, handle: TurnHandle, session: ChatSession, call_id: str, name: str) -> ChatMessage:
        """The tool message a long-running call gets until its result arrives (or an error result at once when
        operations cannot run here or the chain of operations is too deep)."""
        operations = self.deps.operations
        if operations is None or not operations.enabled:
            error = "long-running tools are not available in this deployment"
        elif handle.depth >= self.deps.settings.max_operation_depth:
            error = "too many background operations in a row; answer without starting another"
        else:
            op_id = operation_id_for(session.session_id, call_id)
            running = ToolResult(True, {"status": "running", "operation_id": op_id})
            return running.to_message(call_id, name, turn_id=handle.answer_id, operation_id=op_id, pending=True)
        handle.channel.publish(StreamToolOutputError(tool_call_id=call_id, error_text=error))
        return ToolResult(False, {"error": error}).to_message(call_id, name, turn_id=handle.answer_id)

    async def _ask_approval(self, handle: TurnHandle, session: ChatSession, call: ToolCall) -> ChatMessage:
        """Record that ``call`` waits for the user's approval and ask for it; returns the placeholder to store."""
        approvals, name = self.deps.approvals, call.function.name
        if approvals is None:
            error = f"the tool {name} needs the user's approval, which this deployment cannot ask for"
            handle.channel.publish(StreamToolOutputError(tool_call_id=call.id, error_text=error))
            return ToolResult(False, {"error": error}).to_message(call.id, name, turn_id=handle.answer_id)
        deadline = int(time.time()) + self.deps.settings.approval_timeout_seconds
        arguments = call.function.arguments
        approval = Approval.new(session.session_id, call.id, name, arguments, handle.answer_id, deadline)
        await approvals.create(approval)
        handle.channel.publish(
            StreamToolApprovalRequest(
                approval_id=approval.approval_id, tool_call_id=call.id, tool_name=name, input=parse_input(arguments)
            )
        )
        return approval_placeholder(approval, handle.answer_id)

    async def start_operation(
        self, handle: TurnHandle, session: ChatSession, message: ChatMessage, user_id: str | None
    ) -> None:
        operations = self.deps.operations
        if operations is None or not message.operation_id or not message.seq:
            raise ValueError("not a stored pending tool message")
        call = session.call_of(message.tool_call_id)
        if call is None:
            raise ValueError("a pending tool message without its stored call")
        kind = self.deps.tools.get(call.function.name)
        operation = Operation(
            operation_id=message.operation_id,
            session_id=session.session_id,
            user_id=user_id,
            tool_name=call.function.name,
            tool_call_id=call.id,
            arguments=call.function.arguments,
            kind="callback" if kind is not None and kind.kind == "callback" else "long_running",
            seq=message.seq,
            depth=handle.depth + 1,
        )
        try:
            started = await operations.start(operation)
        except ChatError as exc:
            logger.warning("operation not started", operation_id=operation.operation_id, error=exc.message)
            error = "the background job could not be started; try again later"
            failed = ToolResult(False, {"error": error}).to_message(
                call.id, call.function.name, turn_id=message.turn_id, operation_id=message.operation_id
            )
            await self.deps.sessions.replace_pending(session.session_id, message.seq, failed)
            handle.channel.publish(StreamToolOutputError(tool_call_id=call.id, error_text=error))
            return
        handle.channel.publish(
            StreamData.of(
                "operation",
                {
                    "operation_id": started.operation_id,
                    "session_id": session.session_id,
                    "tool_call_id": call.id,
                    "tool_name": call.function.name,
                    "kind": started.kind,
                    "status": "running",
                },
                id=started.operation_id,
            )
        )

    async def resolve(
        self, handle: TurnHandle, session: ChatSession, waiting: ChatMessage, approval: Approval, user_id: str | None
    ) -> ChatMessage:
        """The message that replaces an answered approval's placeholder (its output is published): a denial, the
        approved call's result, or — for an approved long-running call — its operation's pending placeholder.
        The call runs with its stored arguments, never the client's copy."""
        publish, name, call_id = handle.channel.publish, approval.tool_name, approval.tool_call_id
        arguments = arguments_of(session, waiting)
        keep = {"seq": waiting.seq, "parent_seq": waiting.parent_seq, "approval_id": approval.approval_id}
        if approval.state == "denied":
            publish(
                StreamToolOutputDenied(
                    tool_call_id=call_id, approval_id=approval.approval_id, tool_name=name, input=parse_input(arguments)
                )
            )
            return denial(waiting, approval.reason or DENIED_BY_USER)
        publish(approval_granted(approval.approval_id, call_id, name, parse_input(arguments)))
        tool = self.deps.tools.get(name)
        if tool is not None and tool.kind != "sync":
            return self._pending_message(handle, session, call_id, name).model_copy(update=keep)
        ctx = ToolContext(user_id, session.session_id, {"sessions": self.deps.sessions})
        result = await self.deps.tools.run(name, arguments, ctx)
        message = result.to_message(call_id, name, turn_id=waiting.turn_id).model_copy(update=keep)
        publish(output_event(call_id, message))
        return message


async def unless_stopped[T](work: Awaitable[T], stop: asyncio.Event) -> T | None:
    """``work``'s result, or None when ``stop`` was set first (``work`` is cancelled then): a stop does not wait for
    a slow tool (the call gets an error result, so the history still has an output for it) or a summary."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([task, stopped], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return None
