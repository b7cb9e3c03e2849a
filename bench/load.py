"""Load benchmark: users x sessions x turns through the local stack, then every acknowledged message checked in
DynamoDB.

Run from the repo root: ``uv run python -m bench.load [--users 5] [--sessions 3] [--turns 10] [--levels 1,15]``
(``--smoke`` for the small CI run). Everything is on loopback and bounded:

* the app: ``python -m local --aws external`` (the local stack: the sessions and chat apps in one uvicorn process)
  as a subprocess, so its CPU time can be read from ``/proc/<pid>/stat``;
* DynamoDB: ``python -m local.moto_server`` (one request at a time, as DynamoDB applies each atomically) in a
  subprocess; Redis: a real ``redis-server``; the LLM: the offline model (``python -m local.offline_llm``) with a
  realistic pace (``--first-token-ms``, ``--token-ms``, answers of ``--answer-words`` words) in a subprocess.

For each concurrency level C, on a fresh stack, after three untimed warm-up turns: the LLM alone
(``openai.AsyncOpenAI`` straight to the offline model, C streams at a time, as many calls as turns), then the app:
users x sessions sessions, C of them at a time, each running its turns one after another through ``POST /chat``
(the ``useChat`` body; the first turn creates the session and its title).
Reported: throughput, p50/p95/p99 of the first token and of the whole stream against the LLM alone, the app
process's CPU milliseconds per turn, and errors (non-2xx, error chunks, streams without ``[DONE]``, timeouts).

Then the check: every user message that was acknowledged (its POST answered 200: nothing is streamed before the
message is stored) and every answer that completed (``finish`` and ``[DONE]`` without an error) is read back from
DynamoDB: stored exactly once, in the order sent, the answer's text as streamed. Exit status 1 if any is not.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import boto3
import httpx
import openai

from tests.support.redis_server import RedisServer, free_port
from tests.support.sse import sse_data
from tests.support.tokens import make_token

ROOT = Path(__file__).resolve().parent.parent
TURN_TIMEOUT = 60.0
WARMUP_TURNS = 3  # tests/e2e/test_load_smoke.py counts them
START_TIMEOUT = 60.0
MODEL = "offline-chat"
SECRET = "load-benchmark-secret-long-enough-for-hs256"
_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


# -- results ----------------------------------------------------------------------------------------------------


@dataclass
class Dist:
    p50_ms: float
    p95_ms: float
    p99_ms: float

    @classmethod
    def of(cls, seconds: list[float]) -> Dist:
        if not seconds:
            return cls(float("nan"), float("nan"), float("nan"))
        ms = sorted(s * 1000 for s in seconds)
        if len(ms) == 1:
            return cls(ms[0], ms[0], ms[0])
        q = statistics.quantiles(ms, n=100, method="inclusive")
        return cls(statistics.median(ms), q[94], q[98])


@dataclass
class Phase:
    turns: int
    wall_s: float
    throughput: float  # completed streams per second
    first_token: Dist
    total: Dist


@dataclass
class Errors:
    non_2xx: int = 0
    error_chunks: int = 0
    no_done: int = 0  # the stream ended without [DONE] (or without any text)
    exceptions: int = 0  # transport errors and timeouts
    statuses: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.non_2xx + self.error_chunks + self.no_done + self.exceptions


@dataclass
class Level:
    concurrency: int
    llm: Phase
    app: Phase
    app_cpu_ms_per_turn: float  # the app process's CPU over the phase (and until idle after it), per turn
    app_cpu_share: float  # its CPU seconds per second of the phase: 1.0 = one core busy all along
    moto_cpu_ms_per_turn: float  # the same for the moto process (the DynamoDB stand-in, one request at a time)
    moto_cpu_share: float
    load_average: float  # the machine's 1-minute load average at the end of the phase (other work included)
    errors: Errors


@dataclass
class Verification:
    sessions: int
    acknowledged: int  # user messages whose POST was answered 200
    stored_once: int
    lost: int
    duplicated: int
    completed: int  # answers that ended with finish + [DONE], no error
    answers_stored_once: int
    answers_lost_or_changed: int
    out_of_order: int  # sessions whose stored path is not exactly the sent order
    unacknowledged_stored: int  # user messages stored whose POST did not answer 200 (not a loss; reported)
    leases_held: int  # sessions whose META still holds a turn lease
    problems: list[str] = field(default_factory=list)

    def add(self, other: Verification) -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)

    @property
    def ok(self) -> bool:
        return (
            self.lost == 0
            and self.duplicated == 0
            and self.answers_lost_or_changed == 0
            and self.out_of_order == 0
            and self.leases_held == 0
        )


@dataclass
class Result:
    python: str
    cpus: int
    users: int
    sessions_per_user: int
    turns_per_session: int
    first_token_ms: int
    token_ms: int
    answer_words: int
    levels: list[Level]
    verification: Verification


# -- the services -----------------------------------------------------------------------------------------------


def _wait_http(url: str, proc: subprocess.Popen[bytes], name: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited ({proc.returncode}): {log.read_text()[-2000:]}")
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{name} did not start: {log.read_text()[-2000:]}")


class Services:
    """moto, redis-server, the offline LLM and the app, each its own process on a free loopback port."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.table = f"load-{uuid.uuid4().hex[:12]}"
        self._dir = Path(tempfile.mkdtemp(prefix="load-bench-"))
        self._procs: list[subprocess.Popen[bytes]] = []
        self.redis: RedisServer | None = None
        self.app: subprocess.Popen[bytes] | None = None
        self.moto: subprocess.Popen[bytes] | None = None
        self.moto_url = self.llm_url = self.app_url = ""

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[bytes], Path]:
        log = self._dir / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        self._procs.append(proc)
        return proc, log

    def start(self) -> Services:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "REDIS_", "LLM_", "CHAT_"))}
        env.update(_AWS, POWERTOOLS_METRICS_DISABLED="true", POWERTOOLS_LOG_LEVEL="WARNING", PYTHONUNBUFFERED="1")
        moto_port, llm_port, app_port = free_port(), free_port(), free_port()
        moto, moto_log = self._spawn("moto", [sys.executable, "-m", "local.moto_server", "--port", str(moto_port)], env)
        self.moto = moto
        self.moto_url = f"http://127.0.0.1:{moto_port}"
        llm_argv = [sys.executable, "-m", "local.offline_llm", "--port", str(llm_port)]
        llm_argv += ["--first-token-ms", str(self.args.first_token_ms), "--token-ms", str(self.args.token_ms)]
        llm, llm_log = self._spawn("llm", llm_argv, env)
        self.llm_url = f"http://127.0.0.1:{llm_port}/v1"
        self.redis = RedisServer().start()
        _wait_http(self.moto_url, moto, "moto", moto_log)
        _wait_http(f"{self.llm_url}/models", llm, "the offline LLM", llm_log)
        app_env = {
            **env,
            "AWS_ENDPOINT_URL": self.moto_url,
            "CHAT_TABLE_NAME": self.table,
            "REDIS_URL": self.redis.url,
            "LLM_BASE_URL": self.llm_url,
            "LLM_API_KEY": "offline",
            "LLM_MODEL": MODEL,
            "JWT_SECRET": SECRET,
        }
        argv = [sys.executable, "-m", "local", "--aws", "external", "--port", str(app_port)]
        self.app, app_log = self._spawn("app", argv, app_env)
        self.app_url = f"http://127.0.0.1:{app_port}"
        _wait_http(f"{self.app_url}/health", self.app, "the app", app_log)
        return self

    def app_cpu_seconds(self) -> float:
        """user + system CPU time of the app process (Linux ``/proc``)."""
        assert self.app is not None
        return _cpu_seconds(self.app.pid)

    def moto_cpu_seconds(self) -> float:
        assert self.moto is not None
        return _cpu_seconds(self.moto.pid)

    def dynamodb(self) -> Any:
        return boto3.client(
            "dynamodb",
            endpoint_url=self.moto_url,
            region_name="us-east-1",
            aws_access_key_id=_AWS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=_AWS["AWS_SECRET_ACCESS_KEY"],
            aws_session_token=_AWS["AWS_SESSION_TOKEN"],
        )

    def stop(self) -> None:
        for proc in reversed(self._procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT if proc is self.app else signal.SIGTERM)
        for proc in reversed(self._procs):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if self.redis is not None:
            self.redis.stop()
        shutil.rmtree(self._dir, ignore_errors=True)


def _cpu_seconds(pid: int) -> float:
    """user + system CPU time of a process, from ``/proc/<pid>/stat`` (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def services(args: argparse.Namespace) -> Iterator[Services]:
    running = Services(args)
    try:
        yield running.start()
    finally:
        running.stop()


# -- one turn ---------------------------------------------------------------------------------------------------


@dataclass
class Turn:
    """What the client saw of one turn."""

    text: str  # the user message sent
    message_id: str  # its client message id (the useChat message id)
    status: int = 0  # HTTP status; 0 = no answer
    first: float | None = None  # seconds to the first text-delta
    total: float | None = None  # seconds to [DONE]
    answer: str = ""
    error_chunk: bool = False
    done: bool = False
    exception: str = ""

    @property
    def acknowledged(self) -> bool:
        return self.status == 200

    @property
    def completed(self) -> bool:
        return self.acknowledged and self.done and not self.error_chunk and not self.exception and bool(self.answer)


def _prompt(words: int, user: int, session: int, turn: int) -> str:
    # No "time"/"clock"/"calculate" words: the offline model would call a tool instead of answering.
    return f"[[long:{words}]] Tell me about lighthouses (user {user}, session {session}, message {turn})"


async def _read_stream(response: httpx.Response, turn: Turn, start: float) -> None:
    text: list[str] = []
    async for data in sse_data(response.aiter_text()):
        if data == "[DONE]":
            turn.done = True
            turn.total = time.perf_counter() - start
            continue
        chunk = json.loads(data)
        if chunk.get("type") == "text-delta":
            if turn.first is None:
                turn.first = time.perf_counter() - start
            text.append(chunk["delta"])
        elif chunk.get("type") == "error":
            turn.error_chunk = True
    turn.answer = "".join(text)


async def app_turn(http: httpx.AsyncClient, session_id: str, turn: Turn) -> None:
    body = {
        "id": session_id,
        "messages": [{"id": turn.message_id, "role": "user", "parts": [{"type": "text", "text": turn.text}]}],
        "trigger": "submit-message",
        "messageId": None,
    }
    start = time.perf_counter()
    try:
        async with asyncio.timeout(TURN_TIMEOUT), http.stream("POST", "/chat", json=body) as response:
            turn.status = response.status_code
            if response.status_code != 200:
                await response.aread()
                return
            await _read_stream(response, turn, start)
    except (httpx.HTTPError, TimeoutError) as exc:
        turn.exception = f"{type(exc).__name__}: {exc}"[:200]


async def llm_turn(client: openai.AsyncOpenAI, text: str) -> Turn:
    turn = Turn(text=text, message_id="")
    start = time.perf_counter()
    parts: list[str] = []
    try:
        async with asyncio.timeout(TURN_TIMEOUT):
            stream = await client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": text}],
                stream=True,
                stream_options={"include_usage": True},
            )
            turn.status = 200
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    if turn.first is None:
                        turn.first = time.perf_counter() - start
                    parts.append(chunk.choices[0].delta.content)
        turn.done, turn.total = True, time.perf_counter() - start
    except (openai.OpenAIError, TimeoutError) as exc:
        turn.exception = f"{type(exc).__name__}: {exc}"[:200]
    turn.answer = "".join(parts)
    return turn


# -- the phases -------------------------------------------------------------------------------------------------


@dataclass
class SessionRun:
    user: int
    index: int
    session_id: str
    turns: list[Turn] = field(default_factory=list)


def _phase(turns: list[Turn], wall: float) -> Phase:
    done = [t for t in turns if t.completed]
    return Phase(
        turns=len(turns),
        wall_s=wall,
        throughput=len(done) / wall if wall > 0 else 0.0,
        first_token=Dist.of([t.first for t in done if t.first is not None]),
        total=Dist.of([t.total for t in done if t.total is not None]),
    )


async def run_llm_alone(llm_url: str, concurrency: int, count: int, words: int) -> tuple[Phase, str]:
    texts = [_prompt(words, 0, 0, i) for i in range(count)]
    queue: asyncio.Queue[str] = asyncio.Queue()
    for text in texts:
        queue.put_nowait(text)
    done: list[Turn] = []
    limits = httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency * 2)
    async with openai.AsyncOpenAI(
        base_url=llm_url,
        api_key="offline",
        max_retries=0,
        timeout=TURN_TIMEOUT,
        http_client=httpx.AsyncClient(limits=limits, timeout=TURN_TIMEOUT),
    ) as client:

        async def worker() -> None:
            while not queue.empty():
                done.append(await llm_turn(client, queue.get_nowait()))

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    answers = {t.answer for t in done if t.completed}
    return _phase(done, wall), next(iter(answers)) if len(answers) == 1 else ""


async def run_app(
    app_url: str, runs: list[SessionRun], concurrency: int, turns: int, words: int
) -> tuple[list[Turn], float]:
    queue: asyncio.Queue[SessionRun] = asyncio.Queue()
    for run in runs:
        queue.put_nowait(run)
    limits = httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency * 2)
    async with httpx.AsyncClient(base_url=app_url, timeout=TURN_TIMEOUT, limits=limits) as http:

        async def worker() -> None:
            while not queue.empty():
                run = queue.get_nowait()
                headers = {"authorization": f"Bearer {make_token(f'load-user-{run.user}', secret=SECRET)}"}
                for i in range(turns):
                    turn = Turn(_prompt(words, run.user, run.index, i), f"m-{uuid.uuid4().hex[:16]}")
                    run.turns.append(turn)
                    await app_turn(_Authed(http, headers), run.session_id, turn)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return [t for run in runs for t in run.turns], wall


class _Authed:
    """``http`` with one user's headers on each request (workers share the client and its connection pool)."""

    def __init__(self, http: httpx.AsyncClient, headers: dict[str, str]) -> None:
        self._http, self._headers = http, headers

    def stream(self, method: str, url: str, **kwargs: Any) -> Any:
        return self._http.stream(method, url, headers=self._headers, **kwargs)


def _errors(turns: list[Turn]) -> Errors:
    statuses = Counter(str(t.status) for t in turns if t.status not in (0, 200))
    return Errors(
        non_2xx=sum(statuses.values()),
        error_chunks=sum(1 for t in turns if t.acknowledged and t.error_chunk),
        no_done=sum(1 for t in turns if t.acknowledged and not t.exception and not t.error_chunk and not t.done),
        exceptions=sum(1 for t in turns if t.exception),
        statuses=dict(statuses),
    )


async def _wait_idle(services: Services) -> None:
    """Let the app finish what follows a turn's [DONE] (the replay log's end, titles) before reading its CPU."""
    previous = services.app_cpu_seconds()
    for _ in range(50):
        await asyncio.sleep(0.2)
        now = services.app_cpu_seconds()
        if now - previous < 0.005:
            return
        previous = now


async def measure(services: Services, args: argparse.Namespace, concurrency: int) -> tuple[Level, list[SessionRun]]:
    """One level on a fresh stack: the warm-up, the LLM alone, then the app."""
    count = args.users * args.sessions * args.turns
    # Warm-up, untimed (the app's first turn loads the LLM client, its first DynamoDB and Redis connections): one
    # session of WARMUP_TURNS turns, then as many LLM-alone calls. Its messages are checked in DynamoDB too.
    warm = [SessionRun(0, 0, f"load-warmup-{uuid.uuid4().hex[:10]}")]
    await run_app(services.app_url, warm, 1, WARMUP_TURNS, args.answer_words)
    await run_llm_alone(services.llm_url, 1, WARMUP_TURNS, args.answer_words)
    llm, llm_answer = await run_llm_alone(services.llm_url, concurrency, count, args.answer_words)
    runs = [
        SessionRun(u, s, f"load-c{concurrency}-u{u}-s{s}-{uuid.uuid4().hex[:10]}")
        for u in range(args.users)
        for s in range(args.sessions)
    ]
    await _wait_idle(services)
    app_before, moto_before = services.app_cpu_seconds(), services.moto_cpu_seconds()
    turns, wall = await run_app(services.app_url, runs, concurrency, args.turns, args.answer_words)
    app_busy, moto_busy = services.app_cpu_seconds() - app_before, services.moto_cpu_seconds() - moto_before
    load = os.getloadavg()[0]
    await _wait_idle(services)
    cpu = services.app_cpu_seconds() - app_before
    app_answers = {t.answer for t in turns if t.completed}
    if llm_answer and app_answers and app_answers != {llm_answer}:
        raise RuntimeError("the app and the LLM alone did not stream the same answer")
    n = max(1, len(turns))
    level = Level(
        concurrency,
        llm,
        _phase(turns, wall),
        app_cpu_ms_per_turn=cpu * 1000 / n,
        app_cpu_share=app_busy / wall,
        moto_cpu_ms_per_turn=moto_busy * 1000 / n,
        moto_cpu_share=moto_busy / wall,
        load_average=load,
        errors=_errors(turns),
    )
    return level, warm + runs


# -- the check in DynamoDB --------------------------------------------------------------------------------------


def _stored_messages(client: Any, table: str, session_id: str) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {
        "TableName": table,
        "KeyConditionExpression": "PK = :pk",
        "ExpressionAttributeValues": {":pk": {"S": f"SESSION#{session_id}"}},
        "ConsistentRead": True,
    }
    while True:
        page = client.query(**kwargs)
        items += page["Items"]
        if "LastEvaluatedKey" not in page:
            break
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    meta = next((i for i in items if i["SK"]["S"] == "META"), None)
    messages = [json.loads(i["body"]["S"]) for i in items if i["SK"]["S"].startswith("MSG#")]
    return sorted(messages, key=lambda m: int(m["seq"])), meta


def verify(services: Services, runs: list[SessionRun]) -> Verification:
    client = services.dynamodb()
    v = Verification(len(runs), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    now = int(time.time())
    for run in runs:
        stored, meta = _stored_messages(client, services.table, run.session_id)
        check_session(v, run, stored, meta, now)
    return v


def check_session(
    v: Verification, run: SessionRun, stored: list[dict[str, Any]], meta: dict[str, Any] | None, now: int
) -> None:
    """Add one session's findings to ``v``: ``stored`` are its message bodies by seq, ``meta`` its META item."""
    by_id = Counter(m.get("client_message_id") for m in stored if m["role"] == "user")
    position = {m.get("client_message_id"): i for i, m in enumerate(stored) if m["role"] == "user"}
    expected: list[tuple[str, str]] = []  # what was acknowledged and completed, in the order sent
    for turn in run.turns:
        found = by_id[turn.message_id]
        if not turn.acknowledged:
            v.unacknowledged_stored += found
            continue
        v.acknowledged += 1
        v.stored_once += found == 1
        v.lost += found == 0
        v.duplicated += found > 1
        if found != 1:
            v.problems.append(f"{run.session_id}: user message {turn.message_id} stored {found} times")
        expected.append(("user", turn.message_id))
        if turn.completed:
            v.completed += 1
            after = (
                stored[position[turn.message_id] + 1] if found and position[turn.message_id] + 1 < len(stored) else {}
            )
            if (
                after.get("role") == "assistant"
                and after.get("status") == "complete"
                and after.get("content") == turn.answer
            ):
                v.answers_stored_once += 1
            else:
                v.answers_lost_or_changed += 1
                v.problems.append(f"{run.session_id}: the answer to {turn.message_id} is not stored as streamed")
            expected.append(("assistant", turn.answer))
    sent = {key for _, key in expected}
    kept = [
        ("user", m.get("client_message_id") or "") if m["role"] == "user" else ("assistant", m.get("content") or "")
        for m in stored
        if (m["role"] == "user" and m.get("client_message_id") in sent)
        or (m["role"] == "assistant" and m.get("status") == "complete")
    ]
    if kept != expected:  # a duplicate, a missing or an extra complete answer, or another order
        v.out_of_order += 1
        v.problems.append(f"{run.session_id}: the stored messages differ from the order sent")
    if meta is not None and meta.get("active_turn_id") and int(meta.get("active_turn_expires", {}).get("N", 0)) > now:
        v.leases_held += 1
        v.problems.append(f"{run.session_id}: a turn lease is still held")


# -- output -----------------------------------------------------------------------------------------------------


def render(r: Result) -> str:
    count = r.users * r.sessions_per_user * r.turns_per_session
    lines = [
        f"Load benchmark (Python {r.python}, {r.cpus} CPUs, {platform.machine()}): {r.users} users x"
        f" {r.sessions_per_user} sessions x {r.turns_per_session} turns = {count} turns per level",
        f"offline LLM: first token {r.first_token_ms} ms, {r.token_ms} ms between tokens,"
        f" {r.answer_words}-word answers",
        "",
        f"  {'streams':>7} | {'':<9}| {'turns/s':>7} | {'first token p50 p95 p99 (ms)':>28} |"
        f" {'total p50 p95 p99 (ms)':>24} | {'CPU ms/turn':>11} | errors",
        "  " + "-" * 112,
    ]
    for level in r.levels:
        for name, phase in (("LLM alone", level.llm), ("app", level.app)):
            ft, tt = phase.first_token, phase.total
            cpu = f"{level.app_cpu_ms_per_turn:>11.1f}" if name == "app" else f"{'':>11}"
            errors = str(level.errors.total) if name == "app" else ""
            lines.append(
                f"  {level.concurrency:>7} | {name:<9}| {phase.throughput:>7.2f} |"
                f" {ft.p50_ms:>8.0f} {ft.p95_ms:>8.0f} {ft.p99_ms:>10.0f} |"
                f" {tt.p50_ms:>7.0f} {tt.p95_ms:>7.0f} {tt.p99_ms:>8.0f} | {cpu} | {errors}"
            )
        e = level.errors
        lines.append(
            f"  {'':>7} | {'app/LLM':<9}| {'':>7} |"
            f" {level.app.first_token.p50_ms / level.llm.first_token.p50_ms:>7.2f}x {'':>19}|"
            f" {level.app.total.p50_ms / level.llm.total.p50_ms:>6.2f}x {'':>16}|"
            f" {'':>11} | non-2xx {e.non_2xx}{' ' + str(e.statuses) if e.statuses else ''},"
            f" error chunks {e.error_chunks},"
            f" no [DONE] {e.no_done}, exceptions {e.exceptions}"
        )
        lines.append(
            f"  {'':>7} | {'CPU':<9}| app process {level.app_cpu_share:.0%} of a core;"
            f" moto {level.moto_cpu_ms_per_turn:.1f} ms/turn, {level.moto_cpu_share:.0%} of a core;"
            f" load average {level.load_average:.2f} on {r.cpus} CPUs"
        )
    v = r.verification
    lines += [
        "",
        f"DynamoDB check over {v.sessions} sessions: {v.acknowledged} acknowledged user messages,"
        f" {v.stored_once} stored exactly once, {v.lost} lost, {v.duplicated} duplicated;"
        f" {v.completed} completed answers,"
        f" {v.answers_stored_once} stored exactly once as streamed, {v.answers_lost_or_changed} lost or changed;"
        f" {v.out_of_order} sessions out of order; {v.leases_held} leases left held;"
        f" {v.unacknowledged_stored} unacknowledged messages stored",
        "RESULT: " + ("OK" if v.ok else "FAILED"),
    ]
    lines += [f"  {p}" for p in v.problems[:20]]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> Result:
    """Each level on a fresh stack (new processes, an empty table): moto's cost per request grows with the table,
    so a level run after another would pay for the earlier one's data."""
    levels: list[Level] = []
    verification = Verification(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    for concurrency in args.levels:
        with services(args) as running:
            level, runs = asyncio.run(measure(running, args, concurrency))
            verification.add(verify(running, runs))
        levels.append(level)
    return Result(
        python=platform.python_version(),
        cpus=os.cpu_count() or 0,
        users=args.users,
        sessions_per_user=args.sessions,
        turns_per_session=args.turns,
        first_token_ms=args.first_token_ms,
        token_ms=args.token_ms,
        answer_words=args.answer_words,
        levels=levels,
        verification=verification,
    )


def _levels(value: str) -> list[int]:
    levels = [int(v) for v in value.split(",") if v.strip()]
    if not levels or any(level < 1 or level > 64 for level in levels):
        raise argparse.ArgumentTypeError("levels are 1 to 64 concurrent streams, comma-separated")
    return levels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--users", type=int, default=5)
    parser.add_argument("--sessions", type=int, default=3, help="sessions per user")
    parser.add_argument("--turns", type=int, default=10, help="turns per session")
    parser.add_argument("--levels", type=_levels, default=[1, 15], help="concurrent streams, e.g. 1,15")
    parser.add_argument("--first-token-ms", type=int, default=250, help="offline LLM delay before the first token")
    parser.add_argument("--token-ms", type=int, default=15, help="offline LLM delay between tokens")
    parser.add_argument("--answer-words", type=int, default=30, help="words (tokens) per answer")
    parser.add_argument("--smoke", action="store_true", help="the CI run: 2 users x 2 sessions x 3 turns at 4 streams")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.smoke:
        args.users, args.sessions, args.turns, args.levels = 2, 2, 3, [4]
        args.first_token_ms, args.token_ms, args.answer_words = 50, 2, 10
    if min(args.users, args.sessions, args.turns) < 1 or args.users * args.sessions * args.turns > 2000:
        parser.error("users, sessions and turns must be >= 1, and at most 2,000 turns per level")
    result = run(args)
    print(render(result))
    if args.json:
        args.json.write_text(json.dumps(asdict(result), indent=2) + "\n")
    return 0 if result.verification.ok and all(level.errors.total == 0 for level in result.levels) else 1


if __name__ == "__main__":
    sys.exit(main())
