"""Built-in tools: the current time, safe arithmetic, and search in the caller's own sessions."""

from __future__ import annotations

import ast
import math
import operator
import unicodedata
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field

from chatcore.tools import ToolContext, ToolFailure, ToolRegistry


class CurrentTimeArgs(BaseModel):
    timezone: str = Field(default="UTC", description="IANA time zone, e.g. Europe/Paris", max_length=64)


async def current_time(args: CurrentTimeArgs, ctx: ToolContext) -> dict[str, Any]:
    try:
        zone = ZoneInfo(args.timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ToolFailure(f"unknown time zone {args.timezone!r}") from exc
    now = datetime.now(UTC).astimezone(zone)
    return {"iso": now.isoformat(timespec="seconds"), "timezone": args.timezone, "weekday": now.strftime("%A")}


class CalculatorArgs(BaseModel):
    expression: str = Field(description="Arithmetic, e.g. '2 * (3 + 4) ** 2' or 'sqrt(2)'", max_length=500)


_BINARY: dict[type[ast.operator], Any] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Any] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS: dict[str, Any] = {
    name: getattr(math, name)
    for name in ("sqrt", "sin", "cos", "tan", "log", "log10", "exp", "floor", "ceil", "factorial", "radians", "degrees")
} | {"abs": abs, "round": round}
_CONSTANTS = {"pi": math.pi, "e": math.e, "tau": math.tau}


def evaluate(expression: str) -> float | int:
    """Evaluate arithmetic without eval(): numbers, + - * / // % **, a few math functions and constants."""

    def walk(node: ast.AST) -> float | int:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
            return node.value
        if isinstance(node, ast.Name) and node.id in _CONSTANTS:
            return _CONSTANTS[node.id]
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return _UNARY[type(node.op)](walk(node.operand))  # type: ignore[no-any-return]
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            left, right = walk(node.left), walk(node.right)
            if isinstance(node.op, ast.Pow) and (abs(right) > 1000 or abs(left) > 1e6):
                raise ToolFailure("exponent too large")
            return _BINARY[type(node.op)](left, right)  # type: ignore[no-any-return]
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in _FUNCTIONS
            and not node.keywords
            and len(node.args) <= 2
        ):
            values = [walk(arg) for arg in node.args]
            if node.func.id == "factorial" and (values[0] > 500 or values[0] != int(values[0])):
                raise ToolFailure("factorial needs a whole number up to 500")
            return _FUNCTIONS[node.func.id](*values)  # type: ignore[no-any-return]
        raise ToolFailure(f"unsupported expression element: {type(node).__name__}")

    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise ToolFailure("not a valid arithmetic expression") from exc
    try:
        result = walk(tree)
    except (ArithmeticError, ValueError, OverflowError) as exc:
        raise ToolFailure(f"cannot compute: {exc}") from exc
    if isinstance(result, float) and not math.isfinite(result):
        raise ToolFailure("the result is not a finite number")
    return result


async def calculator(args: CalculatorArgs, ctx: ToolContext) -> dict[str, Any]:
    return {"expression": args.expression, "result": evaluate(args.expression)}


class SearchSessionsArgs(BaseModel):
    query: str = Field(min_length=1, max_length=200, description="Words to look for in your earlier conversations")
    limit: int = Field(default=5, ge=1, le=20)


async def search_sessions(args: SearchSessionsArgs, ctx: ToolContext) -> dict[str, Any]:
    """Substring search over the titles and messages of the caller's 25 most recent sessions."""
    service = ctx.services.get("sessions")
    if service is None or ctx.user_id is None:
        raise ToolFailure("session search is not available here")
    needle = args.query.casefold()
    page = await service.list_sessions(ctx.user_id, limit=25)
    hits: list[dict[str, Any]] = []
    for meta in page.sessions:
        if meta.session_id == ctx.session_id:
            continue
        session = await service.get_chat_session(meta.session_id, ctx.user_id)
        if session is None:
            continue
        snippet = meta.title if needle in meta.title.casefold() else None
        for message in session.messages:
            if snippet is None and message.content and needle in message.content.casefold():
                at = message.content.casefold().index(needle)
                snippet = message.content[max(0, at - 60) : at + 100]
        if snippet is not None:
            hits.append({"session_id": meta.session_id, "title": meta.title, "snippet": snippet})
        if len(hits) >= args.limit:
            break
    return {"query": args.query, "results": hits}


class SummarizeConversationArgs(BaseModel):
    focus: str = Field(default="", max_length=200, description="What the summary should concentrate on")


async def summarize_conversation(args: SummarizeConversationArgs, ctx: ToolContext) -> dict[str, Any]:
    """Long-running: read the whole conversation (any length) and summarise it with the LLM, with statistics."""
    service = ctx.services.get("sessions")
    if service is None:
        raise ToolFailure("conversation access is not available here")
    session = await service.get_chat_session(ctx.session_id, ctx.user_id)
    if session is None:
        raise ToolFailure("the conversation no longer exists")
    spoken = [m for m in session.messages if m.role in ("user", "assistant") and m.content]
    roles: dict[str, int] = {}
    for message in session.messages:
        roles[message.role] = roles.get(message.role, 0) + 1
    words = sum(len((m.content or "").split()) for m in spoken)
    transcript = "\n".join(f"{m.role}: {m.content}" for m in spoken)[-60_000:]
    summary = ""
    llm = ctx.services.get("llm")
    if llm is not None and transcript:
        instruction = "Summarise this conversation in at most 150 words."
        if args.focus:
            instruction += f" Focus on: {args.focus}."
        summary, _ = await llm.complete(
            [{"role": "system", "content": instruction}, {"role": "user", "content": transcript}], max_tokens=400
        )
    return {"summary": summary, "messages": roles, "words": words}


class ExternalJobArgs(BaseModel):
    description: str = Field(min_length=1, max_length=500, description="What the external job will do")


async def wait_for_external_job(args: ExternalJobArgs, ctx: ToolContext) -> dict[str, Any]:
    """Callback: registers the job; the result arrives when the external service calls the callback URL."""
    callback_url = str(ctx.services.get("callback_url") or "")
    return {
        "operation_id": ctx.operation_id,
        "description": args.description,
        "complete": f"{callback_url}/operations/{ctx.operation_id}/complete",
        "fail": f"{callback_url}/operations/{ctx.operation_id}/fail",
    }


class RenameSessionArgs(BaseModel):
    title: str = Field(min_length=1, max_length=200, description="The new title of this conversation")


async def rename_session(args: RenameSessionArgs, ctx: ToolContext) -> dict[str, Any]:
    """A side effect the user sees (the conversation's title changes), so it asks for approval first by default."""
    service = ctx.services.get("sessions")
    title = " ".join(args.title.split())
    if service is None or not title or any(unicodedata.category(c) in ("Cc", "Cf") for c in title):
        raise ToolFailure("this title cannot be used")
    renamed = await service.update_session_title(ctx.session_id, title, ctx.user_id)
    if renamed is None:
        raise ToolFailure("the conversation could not be renamed")
    return {"renamed": True, "title": title}


def register_builtins(registry: ToolRegistry) -> ToolRegistry:
    registry.tool("The current date and time, optionally in a given IANA time zone.")(current_time)
    registry.tool("Evaluate an arithmetic expression exactly (use it for any calculation).")(calculator)
    registry.tool("Search the user's earlier conversations for a word or phrase.")(search_sessions)
    registry.tool(
        "Summarise this whole conversation, however long (runs in the background; the result arrives later).",
        kind="long_running",
    )(summarize_conversation)
    registry.tool(
        "Start an external job and wait for its result (runs in the background; an external service reports back).",
        kind="callback",
    )(wait_for_external_job)
    registry.tool("Rename this conversation (asks the user to approve first).", requires_approval=True)(rename_session)
    return registry


def default_registry() -> ToolRegistry:
    return register_builtins(ToolRegistry())
