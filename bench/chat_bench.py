"""Chat benchmark: streaming latency through the chat app vs the LLM directly, round trips per turn, cold import.

Run from the repo root:
``uv run python -m bench.chat_bench [--turns 20] [--first-token-ms 300] [--token-ms 5] [--json PATH]``.

1. Time to first token (TTFT) and total stream time of ``POST /sessions/{id}/stream`` (the whole chat backend on
   loopback: uvicorn in a thread and the offline LLM in this process, a real redis-server, moto as DynamoDB in a
   child process) against the same offline
   LLM called directly with ``openai.AsyncOpenAI``, with the very request body the app sends, in the same run.
2. DynamoDB requests and Redis round trips before the LLM request starts and in total, for a steady-state turn and
   for the first turn of a session created by ``POST /chat``, with the per-operation breakdown.
3. Cold import of ``functions/chat/app.py`` and ``functions/sessions/app.py`` against ``import boto3``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai

from bench.cold_import import import_once
from chatcore import cache as cache_module
from chatcore import llm as llm_module
from local.moto_server import MotoProcess
from tests.conftest import ChatStack, start_chat_stack, stop_chat_stack
from tests.support.redis_server import RedisServer
from tests.support.sse import sse_data
from tests.support.tokens import auth_header

ROOT = Path(__file__).resolve().parent.parent
HANDLERS = {
    "chat": ROOT / "functions" / "chat" / "app.py",
    "sessions": ROOT / "functions" / "sessions" / "app.py",
}
IMPORT_RUNS = 15
WARMUP = 3
TURN_TIMEOUT = 60.0
IDLE_TIMEOUT = 30.0
# No "time"/"clock"/"calculate" words: the offline model would answer with a tool call instead of text.
PROMPT = "Tell me something interesting about lighthouses and the people who kept them running"
SESSION_TITLE = "Benchmark session"
USER = "bench-user"


# -- results ----------------------------------------------------------------------------------------------------


@dataclass
class Stats:
    median_ms: float
    p90_ms: float

    @classmethod
    def of(cls, seconds: list[float]) -> Stats:
        ms = [s * 1000 for s in seconds]
        return cls(statistics.median(ms), statistics.quantiles(ms, n=10, method="inclusive")[8])


@dataclass
class LatencyResult:
    turns: int
    warmup: int
    first_token_ms: int
    token_ms: int
    session_mode: str
    answer_chars: int
    app_ttft: Stats
    app_total: Stats
    direct_ttft: Stats
    direct_total: Stats
    ttft_ratio: float
    total_ratio: float
    ttft_added_ms: float
    total_added_ms: float
    # Median of the per-pair differences (each app turn against the direct call next to it): drift cancels.
    ttft_paired_ms: float
    total_paired_ms: float
    # The answer's TransactWriteItems, which the stream awaits before ``finish`` (finish means stored).
    answer_write: Stats
    app_total_less_write: Stats
    total_less_write_ratio: float


@dataclass
class TurnRoundTrips:
    name: str
    description: str
    llm_requests: int  # chat-completion requests the turn made (answer, title, ...)
    dynamodb_before: int  # completed before the answer's LLM request started
    dynamodb_in_flight: int  # started, not yet answered at that moment (concurrent with the LLM request)
    dynamodb_total: int
    redis_before: int
    redis_in_flight: int
    redis_total: int
    dynamodb_retries: int  # HTTP requests minus API calls
    # operation -> [completed before the LLM request, in flight then, total]
    dynamodb_ops: dict[str, list[int]] = field(default_factory=dict)
    redis_ops: dict[str, list[int]] = field(default_factory=dict)


@dataclass
class HandlerImport:
    path: str
    median_ms: float
    ratio: float
    diff_ms: float
    openai_imported: bool


@dataclass
class ImportResult:
    runs: int
    baseline_median_ms: float
    handlers: dict[str, HandlerImport]


# -- round-trip counting ----------------------------------------------------------------------------------------


class RoundTrips:
    """Thread-safe counters of DynamoDB HTTP requests and Redis round trips, per operation.

    DynamoDB calls run in ``asyncio.to_thread`` workers and Redis calls on the server's event loop, so every
    update takes the lock. ``started`` counts a round trip when it goes out, ``done`` when its answer came back.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sent = threading.local()  # a botocore request is sent and answered in the same worker thread
        self.transactions: list[tuple[float, float]] = []  # (sent, answered), perf_counter seconds
        self.started: Counter[tuple[str, str]] = Counter()
        self.done: Counter[tuple[str, str]] = Counter()
        self.ddb_calls = 0
        self.snapshot: tuple[Counter[tuple[str, str]], Counter[tuple[str, str]]] | None = None
        self._armed = False

    def reset(self) -> None:
        """Zero the counters and arm the snapshot for the next turn's first LLM stream."""
        with self._lock:
            self.started.clear()
            self.done.clear()
            self.ddb_calls = 0
            self.snapshot = None
            self._armed = True

    def begin(self, kind: str, operation: str) -> None:
        with self._lock:
            self.started[kind, operation] += 1

    def end(self, kind: str, operation: str) -> None:
        with self._lock:
            self.done[kind, operation] += 1

    def sent(self) -> None:
        self._sent.at = time.perf_counter()

    def answered(self, operation: str) -> None:
        if operation == "TransactWriteItems":
            window = (self._sent.at, time.perf_counter())
            with self._lock:
                self.transactions.append(window)

    def last_transaction(self, before: float) -> tuple[float, float] | None:
        """The last TransactWriteItems answered before ``before`` (a turn's answer write)."""
        with self._lock:
            windows = [w for w in self.transactions if w[1] <= before]
        return windows[-1] if windows else None

    def api_call(self) -> None:
        with self._lock:
            self.ddb_calls += 1

    def mark_llm_request(self) -> None:
        with self._lock:
            if self._armed:
                self._armed = False
                self.snapshot = (Counter(self.started), Counter(self.done))

    def in_flight(self) -> int:
        with self._lock:
            return sum(self.started.values()) - sum(self.done.values())

    def result(self, name: str, description: str, llm_requests: int) -> TurnRoundTrips:
        with self._lock:
            started = Counter(self.started)
            snap_started, snap_done = self.snapshot or (Counter(), Counter())
            calls = self.ddb_calls

        def ops(kind: str) -> dict[str, list[int]]:
            names = sorted({op for k, op in started if k == kind})
            return {
                op: [snap_done[kind, op], snap_started[kind, op] - snap_done[kind, op], started[kind, op]]
                for op in names
            }

        ddb, redis = ops("dynamodb"), ops("redis")
        return TurnRoundTrips(
            name=name,
            description=description,
            llm_requests=llm_requests,
            dynamodb_before=sum(v[0] for v in ddb.values()),
            dynamodb_in_flight=sum(v[1] for v in ddb.values()),
            dynamodb_total=sum(v[2] for v in ddb.values()),
            redis_before=sum(v[0] for v in redis.values()),
            redis_in_flight=sum(v[1] for v in redis.values()),
            redis_total=sum(v[2] for v in redis.values()),
            dynamodb_retries=sum(v[2] for v in ddb.values()) - calls,
            dynamodb_ops=ddb,
            redis_ops=redis,
        )


def _operation(event_name: str) -> str:
    # "before-send.dynamodb.GetItem" -> "GetItem"
    return event_name.rsplit(".", 1)[-1]


@contextmanager
def instrumented(counters: RoundTrips, client: Any) -> Iterator[None]:
    """Count every DynamoDB request (of ``client``, the server's) and Redis round trip of this process; snapshot
    when the answer's LLM request starts."""

    def on_call(**kwargs: Any) -> None:  # once per API call
        counters.api_call()

    def on_send(event_name: str, **kwargs: Any) -> None:  # once per HTTP attempt (retries included)
        counters.begin("dynamodb", _operation(event_name))
        counters.sent()

    def on_received(event_name: str, **kwargs: Any) -> None:  # once per HTTP attempt, answered or failed
        counters.answered(_operation(event_name))
        counters.end("dynamodb", _operation(event_name))

    handlers = (
        ("before-call.dynamodb", on_call),
        ("before-send.dynamodb", on_send),
        ("response-received.dynamodb", on_received),
    )
    for event, handler in handlers:
        client.meta.events.register(event, handler, unique_id=f"chat-bench-{event}")

    connector_cls = cache_module.RedisConnector
    original_run = connector_cls.run

    async def counted_run(
        self: cache_module.RedisConnector,
        operation: str,
        call: Callable[[Any], Awaitable[Any]],
        fallback: Any,
        *,
        blocking: bool = False,
    ) -> Any:
        # ``run`` makes no round trip when the circuit is open; ``available()`` has no side effects.
        counted = self.available()
        if counted:
            counters.begin("redis", operation)
        try:
            return await original_run(self, operation, call, fallback, blocking=blocking)
        finally:
            if counted:
                counters.end("redis", operation)

    llm_cls = llm_module.LLM
    original_stream = llm_cls.stream

    def marked_stream(self: llm_module.LLM, messages: list[dict[str, Any]], **kwargs: Any) -> AsyncIterator[Any]:
        # The turn wraps ``LLM.stream`` in a prefetch task; the generator body starts with
        # ``await self.client.chat.completions.create(...)``, so the first step of this wrapper is the moment the
        # answer's request goes out (titles and summaries use ``LLM.complete`` and are not marked). Hooking here
        # rather than in the offline server separates what the request waited for (round trips already answered)
        # from what runs concurrently with it (in flight), which a snapshot at the server's receipt would blur.
        async def wrapper() -> AsyncIterator[Any]:
            counters.mark_llm_request()
            inner = original_stream(self, messages, **kwargs)
            try:
                async for item in inner:
                    yield item
            finally:
                await inner.aclose()

        return wrapper()

    connector_cls.run = counted_run  # type: ignore[method-assign]
    llm_cls.stream = marked_stream  # type: ignore[method-assign]
    try:
        yield
    finally:
        connector_cls.run = original_run  # type: ignore[method-assign]
        llm_cls.stream = original_stream  # type: ignore[method-assign]
        for event, _handler in handlers:
            client.meta.events.unregister(event, unique_id=f"chat-bench-{event}")


# -- HTTP helpers -----------------------------------------------------------------------------------------------


@dataclass
class StreamTiming:
    ttft: float
    total: float
    text: str
    start: float = 0.0  # perf_counter when the request started


async def _read_sse(response: httpx.Response, start: float) -> StreamTiming:
    """Parse SSE incrementally (``tests.support.sse.sse_data``); TTFT at the first text-delta chunk."""
    if response.status_code != 200:
        await response.aread()
        raise RuntimeError(f"stream answered {response.status_code}: {response.text[:300]}")
    first: float | None = None
    text: list[str] = []
    done = False
    async for data in sse_data(response.aiter_text()):
        if data == "[DONE]":
            done = True
            continue
        chunk = json.loads(data)
        if chunk.get("type") == "text-delta":
            if first is None:
                first = time.perf_counter()
            text.append(chunk["delta"])
        elif chunk.get("type") == "error":
            raise RuntimeError(f"the turn failed: {chunk}")
    end = time.perf_counter()
    if not done or first is None:
        raise RuntimeError("the stream ended without [DONE] or without any text")
    return StreamTiming(first - start, end - start, "".join(text), start)


async def app_turn(client: httpx.AsyncClient, session_id: str, message: str) -> StreamTiming:
    start = time.perf_counter()
    async with client.stream("POST", f"/sessions/{session_id}/stream", json={"message": message}) as response:
        return await _read_sse(response, start)


async def chat_turn(client: httpx.AsyncClient, session_id: str, message: str) -> StreamTiming:
    body = {
        "id": session_id,
        "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": message}]}],
        "trigger": "submit-message",
        "messageId": None,
    }
    start = time.perf_counter()
    async with client.stream("POST", "/chat", json=body) as response:
        return await _read_sse(response, start)


async def direct_turn(client: openai.AsyncOpenAI, request: dict[str, Any]) -> StreamTiming:
    start = time.perf_counter()
    stream = await client.chat.completions.create(**request)
    first: float | None = None
    text: list[str] = []
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            if first is None:
                first = time.perf_counter()
            text.append(chunk.choices[0].delta.content)
    end = time.perf_counter()
    if first is None:
        raise RuntimeError("the direct stream produced no text")
    return StreamTiming(first - start, end - start, "".join(text))


async def new_titled_session(client: httpx.AsyncClient) -> str:
    response = await client.post("/sessions", json={"title": SESSION_TITLE})
    if response.status_code != 201:
        raise RuntimeError(f"POST /sessions answered {response.status_code}: {response.text[:300]}")
    sid: str = response.json()["id"]
    return sid


async def wait_idle(chat: ChatStack, counters: RoundTrips) -> None:
    """Wait until no turn runs in the server (``[DONE]`` goes out before the replay log is closed) and no round
    trip is in flight, stable for 100 ms."""
    deadline = time.monotonic() + IDLE_TIMEOUT
    quiet_since: float | None = None
    while True:
        now = time.monotonic()
        if not chat.stack.engine or (not chat.stack.engine.running and counters.in_flight() == 0):
            quiet_since = quiet_since or now
            if now - quiet_since >= 0.1:
                return
        else:
            quiet_since = None
        if now > deadline:
            raise RuntimeError("the server did not become idle")
        await asyncio.sleep(0.01)


# -- 1 and 2: latency and round trips ---------------------------------------------------------------------------


def _bounded[T](coro: Awaitable[T]) -> Awaitable[T]:
    return asyncio.wait_for(coro, TURN_TIMEOUT)


def _answer_request(chat: ChatStack, since: int) -> dict[str, Any]:
    """The streamed chat-completions body the app sent after ``since`` (the answer, not a title request)."""
    bodies = [b for b in chat.llm.requests[since:] if b.get("stream") is True]
    if len(bodies) != 1:
        raise RuntimeError(f"expected one streamed LLM request for the turn, saw {len(bodies)}")
    keep = ("model", "messages", "tools", "tool_choice", "stream", "stream_options")
    return {k: bodies[0][k] for k in keep if k in bodies[0]}


def _answer_write(counters: RoundTrips, turn: StreamTiming) -> float:
    """Seconds the turn's answer write took: its last TransactWriteItems, answered before its [DONE]."""
    window = counters.last_transaction(turn.start + turn.total)
    if window is None or window[0] < turn.start:
        raise RuntimeError("no answer write was seen for an app turn")
    return window[1] - window[0]


async def measure_latency(chat: ChatStack, counters: RoundTrips, args: argparse.Namespace) -> LatencyResult:
    headers = auth_header(USER, secret=chat.settings.jwt_secret)
    async with (
        httpx.AsyncClient(base_url=chat.url, headers=headers, timeout=TURN_TIMEOUT) as http,
        openai.AsyncOpenAI(
            base_url=chat.llm.base_url, api_key="offline", max_retries=0, timeout=TURN_TIMEOUT
        ) as direct,
    ):
        # The first warm-up app turn gives the exact request body the app sends; the direct calls reuse it.
        since = len(chat.llm.requests)
        sid = await new_titled_session(http)
        warm = await _bounded(app_turn(http, sid, PROMPT))
        await wait_idle(chat, counters)
        request = _answer_request(chat, since)
        for _ in range(WARMUP):
            sid = await new_titled_session(http)
            await _bounded(app_turn(http, sid, PROMPT))
            await wait_idle(chat, counters)
            await _bounded(direct_turn(direct, request))

        app: list[StreamTiming] = []
        raw: list[StreamTiming] = []
        writes: list[float] = []
        for i in range(args.turns):
            sid = await new_titled_session(http)  # untimed: a fresh titled session per turn (see render)
            order = ("direct", "app") if i % 2 == 0 else ("app", "direct")
            for which in order:
                if which == "app":
                    app.append(await _bounded(app_turn(http, sid, PROMPT)))
                    writes.append(_answer_write(counters, app[-1]))
                    await wait_idle(chat, counters)
                else:
                    raw.append(await _bounded(direct_turn(direct, request)))
        texts = {t.text for t in (*app, *raw, warm)}
        if len(texts) != 1:
            raise RuntimeError("the app and the direct calls did not get the same answer")

    app_ttft, app_total = Stats.of([t.ttft for t in app]), Stats.of([t.total for t in app])
    direct_ttft, direct_total = Stats.of([t.ttft for t in raw]), Stats.of([t.total for t in raw])
    less_write = Stats.of([t.total - w for t, w in zip(app, writes, strict=True)])
    return LatencyResult(
        turns=args.turns,
        warmup=WARMUP,
        first_token_ms=args.first_token_ms,
        token_ms=args.token_ms,
        session_mode="fresh session per turn, created untimed via POST /sessions with a non-empty title",
        answer_chars=len(warm.text),
        app_ttft=app_ttft,
        app_total=app_total,
        direct_ttft=direct_ttft,
        direct_total=direct_total,
        ttft_ratio=app_ttft.median_ms / direct_ttft.median_ms,
        total_ratio=app_total.median_ms / direct_total.median_ms,
        ttft_added_ms=app_ttft.median_ms - direct_ttft.median_ms,
        total_added_ms=app_total.median_ms - direct_total.median_ms,
        ttft_paired_ms=statistics.median((a.ttft - d.ttft) * 1000 for a, d in zip(app, raw, strict=True)),
        total_paired_ms=statistics.median((a.total - d.total) * 1000 for a, d in zip(app, raw, strict=True)),
        answer_write=Stats.of(writes),
        app_total_less_write=less_write,
        total_less_write_ratio=less_write.median_ms / direct_total.median_ms,
    )


async def measure_round_trips(chat: ChatStack, counters: RoundTrips) -> list[TurnRoundTrips]:
    headers = auth_header(USER, secret=chat.settings.jwt_secret)
    results: list[TurnRoundTrips] = []
    async with httpx.AsyncClient(base_url=chat.url, headers=headers, timeout=TURN_TIMEOUT) as http:
        # Steady state: a titled session with two earlier turns, its cache entry written by the last one.
        sid = await new_titled_session(http)
        for _ in range(2):
            await _bounded(app_turn(http, sid, PROMPT))
            await wait_idle(chat, counters)
        since = len(chat.llm.requests)
        counters.reset()
        await _bounded(app_turn(http, sid, PROMPT))
        await wait_idle(chat, counters)
        results.append(
            counters.result(
                "steady",
                "steady-state turn: POST /sessions/{id}/stream, titled session with 4 messages, cache warm",
                len(chat.llm.requests) - since,
            )
        )

        # First turn of a session that POST /chat creates (no title yet: the title request runs too).
        sid = f"bench-{uuid.uuid4().hex}"
        since = len(chat.llm.requests)
        counters.reset()
        await _bounded(chat_turn(http, sid, PROMPT))
        await wait_idle(chat, counters)
        results.append(
            counters.result(
                "new",
                "first turn of a new session: POST /chat (AI SDK body), session created by the turn, title generated",
                len(chat.llm.requests) - since,
            )
        )
    return results


def measure_stack(args: argparse.Namespace) -> tuple[LatencyResult, list[TurnRoundTrips]]:
    # DynamoDB's stand-in runs in a process of its own: in AWS its work costs the function no CPU, and in this
    # process it held the GIL just as the turn's LLM request went out (the user message's transaction).
    moto = MotoProcess().start()
    redis: RedisServer | None = None
    chat: ChatStack | None = None
    try:
        redis = RedisServer().start()
        os.environ.update(
            {
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_SESSION_TOKEN": "testing",
                "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_REGION": "us-east-1",
                "AWS_ENDPOINT_URL": moto.url,
                "POWERTOOLS_METRICS_DISABLED": "true",
                "POWERTOOLS_LOG_LEVEL": "WARNING",
            }
        )
        for key in ("AWS_PROFILE", "REDIS_URL", "CHAT_TABLE_NAME", "LLM_BASE_URL", "LLM_API_KEY"):
            os.environ.pop(key, None)
        table = f"bench-{uuid.uuid4().hex[:12]}"  # a fresh table; the stack creates it from template.yaml
        chat = start_chat_stack(table, redis.url, llm_timeout_seconds=TURN_TIMEOUT, heartbeat_seconds=15.0)
        chat.llm.first_token_delay = args.first_token_ms / 1000
        chat.llm.token_delay = args.token_ms / 1000
        counters = RoundTrips()
        assert chat.stack.container is not None
        with instrumented(counters, chat.stack.container.aws.dynamodb()):
            latency = asyncio.run(measure_latency(chat, counters, args))
            round_trips = asyncio.run(measure_round_trips(chat, counters))
        return latency, round_trips
    finally:
        if chat is not None:
            stop_chat_stack(chat)
        if redis is not None:
            redis.stop()
        moto.stop()


# -- 3. cold import ---------------------------------------------------------------------------------------------


def _import_once(mode: str, path: str, name: str, env: dict[str, str]) -> tuple[float, bool]:
    return import_once(mode, path, name, env)


def measure_import(runs: int) -> ImportResult:
    env = dict(os.environ)
    jobs: list[tuple[str, str, str]] = [("baseline", "-", "baseline")] + [
        ("handler", str(path), f"{name}_app") for name, path in HANDLERS.items()
    ]
    for mode, path, name in jobs:  # one discarded run of each (bytecode caches, OS page cache)
        _import_once(mode, path, name, env)
    seconds: dict[str, list[float]] = {name: [] for _, _, name in jobs}
    openai_seen: dict[str, bool] = dict.fromkeys(seconds, False)
    for i in range(runs):
        # Rotate the order so drift hits every module alike.
        for mode, path, name in jobs[i % len(jobs) :] + jobs[: i % len(jobs)]:
            elapsed, imported = _import_once(mode, path, name, env)
            seconds[name].append(elapsed)
            openai_seen[name] |= imported
    baseline = statistics.median(seconds["baseline"]) * 1000
    handlers: dict[str, HandlerImport] = {}
    for name, handler in HANDLERS.items():
        median = statistics.median(seconds[f"{name}_app"]) * 1000
        handlers[name] = HandlerImport(
            str(handler.relative_to(ROOT)), median, median / baseline, median - baseline, openai_seen[f"{name}_app"]
        )
    return ImportResult(runs, baseline, handlers)


# -- output -----------------------------------------------------------------------------------------------------


def _render_latency(r: LatencyResult) -> list[str]:
    def row(label: str, app: Stats, direct: Stats, ratio: float, added: float, paired: float) -> str:
        return (
            f"   {label:<6}| {app.median_ms:>8.1f} {app.p90_ms:>8.1f} | {direct.median_ms:>8.1f} {direct.p90_ms:>8.1f}"
            f" | {ratio:>7.2f}x | {added:>+9.1f} | {paired:>+9.1f}"
        )

    w, less = r.answer_write, r.app_total_less_write

    return [
        f"1. Streaming latency, {r.turns} timed turns each (after {r.warmup} warm-up), alternating direct/app;"
        f" offline LLM first token {r.first_token_ms} ms, {r.token_ms} ms between tokens",
        f"   {'':<6}| {'app p50':>8} {'app p90':>8} | {'llm p50':>8} {'llm p90':>8} | {'app/llm':>8}"
        f" | {'added p50':>9} | {'paired p50':>9}",
        "   " + "-" * 82,
        row("TTFT", r.app_ttft, r.direct_ttft, r.ttft_ratio, r.ttft_added_ms, r.ttft_paired_ms),
        row("total", r.app_total, r.direct_total, r.total_ratio, r.total_added_ms, r.total_paired_ms),
        f"   of which the answer's write (TransactWriteItems to moto, awaited before finish): p50 {w.median_ms:.1f},"
        f" p90 {w.p90_ms:.1f}",
        f"   total less that write: p50 {less.median_ms:.1f}, p90 {less.p90_ms:.1f} = {r.total_less_write_ratio:.3f}x"
        " the llm's p50",
        "   (ms; app = POST /sessions/{id}/stream over loopback HTTP, TTFT at the first text-delta chunk, total at"
        " [DONE];",
        "    llm = the same offline LLM through openai.AsyncOpenAI with the exact body the app sent, TTFT at the first"
        " content delta;",
        "    added p50 = app p50 - llm p50; paired p50 = the median of app - llm over the pairs of consecutive turns)",
        f"   Sessions: {r.session_mode}:",
        "   no title request, same history (none) and same LLM request every turn; the cache holds the session.",
        f"   Answer: {r.answer_chars} characters, identical for app and direct.",
    ]


def _render_round_trips(results: list[TurnRoundTrips]) -> list[str]:
    lines = [
        "2. Round trips per turn (DynamoDB = HTTP requests to moto; Redis = RedisConnector.run calls, a pipeline is"
        " one)",
        "   'before LLM' = answered before the answer's chat-completions request went out (what it waited for);",
        "   'in flight' = sent then but not answered (concurrent with the request; the user-message write starts in"
        " the",
        "   same event-loop step, so whether it was already sent is a thread race); 'total' = the whole turn, until"
        " idle.",
    ]
    for r in results:
        lines += [
            "",
            f"   {r.description}",
            f"   {'':<28}{'before LLM':>11}{'in flight':>11}{'total':>8}",
            f"   {'DynamoDB requests':<28}{r.dynamodb_before:>11}{r.dynamodb_in_flight:>11}{r.dynamodb_total:>8}",
        ]
        lines += [f"     {op:<26}{v[0]:>11}{v[1]:>11}{v[2]:>8}" for op, v in r.dynamodb_ops.items()]
        lines.append(f"   {'Redis round trips':<28}{r.redis_before:>11}{r.redis_in_flight:>11}{r.redis_total:>8}")
        lines += [f"     {op:<26}{v[0]:>11}{v[1]:>11}{v[2]:>8}" for op, v in r.redis_ops.items()]
        lines.append(f"   LLM requests: {r.llm_requests}; DynamoDB retries: {r.dynamodb_retries}")
    lines.append(
        "   replay.cancelled is a poll every 0.5 s and replay.append a batch per wake-up: their counts depend on"
        " timing."
    )
    return lines


def _render_import(r: ImportResult) -> list[str]:
    lines = [
        f"3. Cold import, median of {r.runs} fresh subprocesses each (time inside the subprocess)",
        f"   {'module':<28}{'median':>9}   {'/ boto3':>8}  {'- boto3':>9}   openai imported",
        f"   {'import boto3 (baseline)':<28}{r.baseline_median_ms:>9.1f} ms",
    ]
    for name, h in r.handlers.items():
        expected = "expected" if name == "chat" else "MUST NOT BE"
        verdict = ("yes" if h.openai_imported else "no") + (
            f" ({expected})" if h.openai_imported or name == "chat" else ""
        )
        lines.append(f"   {h.path:<28}{h.median_ms:>9.1f} ms{h.ratio:>8.2f}x {h.diff_ms:>+9.1f} ms   {verdict}")
    return lines


def render(latency: LatencyResult, round_trips: list[TurnRoundTrips], imports: ImportResult) -> str:
    lines = [f"Chat benchmark (Python {platform.python_version()}, {platform.machine()})", ""]
    lines += [*_render_latency(latency), "", *_render_round_trips(round_trips), "", *_render_import(imports)]
    lines += [
        "",
        "Note: DynamoDB is moto (its own process) over loopback HTTP and Redis a local redis-server, so absolute",
        "times are not AWS times; the round-trip counts are what the code does on any backend.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--turns", type=int, default=20, help="timed turns for app and for direct each")
    parser.add_argument("--first-token-ms", type=int, default=300, help="offline LLM delay before the first token")
    parser.add_argument("--token-ms", type=int, default=5, help="offline LLM delay between tokens")
    parser.add_argument("--runs", type=int, default=IMPORT_RUNS, help="fresh subprocesses per import measurement")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.turns < 2 or args.runs < 1 or args.first_token_ms < 0 or args.token_ms < 0:
        parser.error("--turns must be >= 2, --runs >= 1 and the delays >= 0")

    imports = measure_import(args.runs)  # first: the subprocesses must not inherit the stack's environment
    latency, round_trips = measure_stack(args)
    print(render(latency, round_trips, imports))
    if args.json:
        payload = {
            "python": platform.python_version(),
            "latency": asdict(latency),
            "round_trips": [asdict(r) for r in round_trips],
            "import": asdict(imports),
            "dynamodb_backend": "moto in a child process, over loopback HTTP",
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 1 if imports.handlers["sessions"].openai_imported else 0


if __name__ == "__main__":
    sys.exit(main())
