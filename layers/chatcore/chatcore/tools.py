"""Tools the LLM can call: a typed Python function with a pydantic argument model is a tool.

The argument model's JSON schema is what the LLM sees. Arguments are validated; invalid JSON or invalid
arguments become an error *result* the LLM reads (so it can correct itself), never an exception in the turn.
Adding a tool is a few lines::

    class WeatherArgs(BaseModel):
        city: str

    @registry.tool("Current weather of a city.")
    async def weather(args: WeatherArgs, ctx: ToolContext) -> dict[str, Any]:
        ...

``kind`` says where a tool runs: ``sync`` in the chat turn; ``long_running`` and ``callback`` tools run outside
the request (Step Functions); a long-running tool raises ``TransientToolError`` for a failure worth retrying (its
task fails by that name: the state machine runs it again, then reports it failed). ``requires_approval`` makes a
call wait for the user's yes or no before it runs (``chatcore.approvals``); the ``TOOLS_REQUIRING_APPROVAL`` setting
replaces those flags.

Every tool message (a sync result, a long-running or callback result saved by the state machine, an error result, the
pending placeholder) is built by ``ToolResult.to_message``: the output as strict JSON, cut to ``MAX_RESULT_CHARS``;
an output that is not JSON (a non-JSON type, an int past Python's 4,300-digit limit, NaN) becomes an error result.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from chatcore.errors import ConfigError, TransientToolError
from chatcore.errors import ToolFailure as ToolFailure  # raised by tools: re-exported for tool authors
from chatcore.models import ChatMessage, MessageStatus
from chatcore.observability import logger

ToolKind = Literal["sync", "long_running", "callback"]
# The most characters of a tool result that are stored and sent to the LLM; a longer result is cut, and marked so.
MAX_RESULT_CHARS = 16_000
TRUNCATED = "…(truncated)"


@dataclass(frozen=True)
class ToolContext:
    user_id: str | None
    session_id: str
    services: dict[str, Any] = field(default_factory=dict)
    operation_id: str | None = None  # set for long-running and callback tools


@dataclass(frozen=True)
class ToolResult:
    ok: bool
    output: Any  # JSON-able; on failure {"error": "..."}

    def to_message(
        self,
        tool_call_id: str,
        name: str | None,
        *,
        turn_id: str | None = None,
        operation_id: str | None = None,
        pending: bool = False,
    ) -> ChatMessage:
        """The tool message for this result, the one way every tool message is made: the content the LLM reads is
        strict JSON cut to ``MAX_RESULT_CHARS``; an output that cannot be JSON becomes an error result instead.
        ``pending``: the placeholder of a long-running call, until its result replaces it."""
        ok = self.ok
        try:
            content = json.dumps(self.output, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError, RecursionError) as exc:  # a non-JSON type, NaN, an int past 4,300 digits
            logger.warning("tool result is not JSON", tool=name, error=str(exc)[:200])
            error = f"the tool {name} returned a result that cannot be encoded as JSON: {str(exc)[:200]}"
            ok, content = False, json.dumps({"error": error}, ensure_ascii=False)
        if len(content) > MAX_RESULT_CHARS:
            content = content[:MAX_RESULT_CHARS] + TRUNCATED
        status: MessageStatus = "pending" if pending else ("complete" if ok else "error")
        return ChatMessage(
            role="tool",
            tool_call_id=tool_call_id,
            name=name,
            content=content,
            status=status,
            turn_id=turn_id,
            operation_id=operation_id,
        )


ToolFn = Callable[[Any, ToolContext], Awaitable[Any]]


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    args_model: type[BaseModel]
    fn: ToolFn
    kind: ToolKind = "sync"
    requires_approval: bool = False

    def openai_schema(self) -> dict[str, Any]:
        schema = self.args_model.model_json_schema()
        schema.pop("title", None)
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": schema},
        }

    def parse(self, arguments: str) -> BaseModel:
        raw = json.loads(arguments or "{}")
        return self.args_model.model_validate(raw)


class ToolRegistry:
    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}
        self._approval_override: frozenset[str] | None = None
        self._schemas: list[dict[str, Any]] | None = None

    def tool(
        self,
        description: str,
        *,
        name: str | None = None,
        kind: ToolKind = "sync",
        args_model: type[BaseModel] | None = None,
        requires_approval: bool = False,
    ) -> Callable[[ToolFn], ToolFn]:
        """Register ``fn(args, ctx)``; its argument model is the first parameter's annotation (or ``args_model``)."""

        def register(fn: ToolFn) -> ToolFn:
            model = args_model or next(iter(typing.get_type_hints(fn).values()))
            if not (isinstance(model, type) and issubclass(model, BaseModel)):
                raise TypeError(f"the first parameter of tool {fn.__name__} must be a pydantic model")
            self.add(Tool(name or fn.__name__, description, model, fn, kind, requires_approval))
            return fn

        return register

    def add(self, tool: Tool) -> None:
        if tool.name in self._tools:
            raise ValueError(f"tool {tool.name} is already registered")
        self._tools[tool.name] = tool
        self._schemas = None

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def require_approval_for(self, names: tuple[str, ...] | None) -> None:
        """Replace the tools' own ``requires_approval`` flags with this list (None keeps the flags)."""
        if names is not None and (unknown := sorted(set(names) - set(self._tools))):
            raise ConfigError(f"TOOLS_REQUIRING_APPROVAL names unknown tools: {', '.join(unknown)}")
        self._approval_override = None if names is None else frozenset(names)

    def needs_approval(self, name: str) -> bool:
        if self._approval_override is not None:
            return name in self._approval_override
        tool = self._tools.get(name)
        return tool is not None and tool.requires_approval

    def names(self) -> list[str]:
        return sorted(self._tools)

    def openai_tools(self) -> list[dict[str, Any]]:
        """The tools as the model request lists them: built once (pydantic's JSON schemas cost ~2 ms per turn,
        before the model request), a new list each time; the schemas in it are shared, not to be changed."""
        if self._schemas is None:
            self._schemas = [tool.openai_schema() for tool in self._tools.values()]
        return list(self._schemas)

    async def run(self, name: str, arguments: str, ctx: ToolContext) -> ToolResult:
        tool = self._tools.get(name)
        if tool is None:
            return ToolResult(False, {"error": f"unknown tool {name!r}; available: {', '.join(self.names())}"})
        try:
            args = tool.parse(arguments)
        except json.JSONDecodeError as exc:
            return ToolResult(False, {"error": f"arguments are not valid JSON: {exc.msg}"})
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}" for e in exc.errors())
            return ToolResult(False, {"error": f"invalid arguments: {problems}"})
        try:
            return ToolResult(True, await tool.fn(args, ctx))
        except ToolFailure as exc:
            return ToolResult(False, {"error": str(exc)})
        except TransientToolError:
            if tool.kind == "long_running":
                raise  # the worker's task fails by this name: the state machine retries it, then catches it
            logger.exception("tool failed", tool=name)
            return ToolResult(False, {"error": f"tool {name} failed unexpectedly"})
        except Exception:
            logger.exception("tool failed", tool=name)
            return ToolResult(False, {"error": f"tool {name} failed unexpectedly"})
