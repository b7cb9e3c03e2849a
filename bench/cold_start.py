"""Cold start as a user meets it: a fresh process's init plus its first request, against warm backends.

Run from the repo root: ``uv run python -m bench.cold_start [--runs N] [--top N] [--json PATH] [--layer DIR]``.

By default every process imports from the development environment (its site-packages; this machine writes no
bytecode, so each import compiles). With ``--layer`` (a built layer's ``python`` folder: ``sam build``'s
``.aws-sam/build/ChatCoreLayer/python``, or ``make build-ChatCoreLayer`` of layers/chatcore/Makefile), every
process imports as it does in Lambda: ``python -S -B`` with the function's folder, the layer (with its bytecode) and
boto3 and s3transfer compiled as the runtime ships them (for the baselines) on its path, nothing else.

* SessionsFunction: ``import app`` from ``functions/sessions`` (what the Lambda runtime does for ``app.handler``),
  then the handler's first invocation, ``GET /sessions`` with a valid token (it builds the app: settings, the JWT
  secret read from Secrets Manager, the DynamoDB client, then the query). Baseline: ``import boto3``.
* ChatFunction: what ``run.sh`` does behind the Lambda Web Adapter: ``chatcore.web.serve`` (uvicorn without its
  command line) with ``app:asgi_app`` on a loopback port (lifespan, the app's build on its first call), the
  adapter's readiness request ``GET /ready``, then the first ``GET /health`` over HTTP. Baseline: ``import boto3,
  openai, starlette``.
* ToolWorker, Continuation and Callback functions: ``import app``, then a first invocation with a sample event of
  ``events/`` (its app or engine built, a DynamoDB read).
* SnapStart, simulated, for the four functions that have it: a process runs init and the before-snapshot hook, then
  forks; the child (same memory, as a restored environment) runs the after-restore hook and the first request. Only
  that child's time is reported: Lambda's restore of the snapshot itself cannot be measured here.

Each process gets the environment template.yaml gives that function with the default parameters (evaluated by
``tests.support.template_eval``; its secrets are created in moto), with ``LlmApiKeySecretArn`` set and ``REDIS_URL``
pointing at a real ``redis-server`` (as when the stack creates the cache). DynamoDB and Secrets Manager are moto over
loopback HTTP, already warm. Medians over ``--runs`` rounds; each round runs every job once, in a rotated order.
Peak RSS is the process's ``VmHWM`` after init and after the first request. The import-time table comes from
one more run of each function under ``python -X importtime`` (which slows imports down: shares, not timings).
"""

from __future__ import annotations

import argparse
import compileall
import json
import logging
import os
import platform
import py_compile
import shutil
import socket
import statistics
import sys
import tempfile
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import boto3

from bench.child import CHILD_PRELUDE
from bench.cold_import import ROOT, import_self_times, run_fresh
from local.moto_server import MotoServer
from local.template import create_table_kwargs
from tests.support.aws_resources import llm_key_secret_arn
from tests.support.deploy import SETTING_VARS, deploy
from tests.support.handlers import load_event
from tests.support.redis_server import RedisServer
from tests.support.tokens import auth_header

TARGETS = {"sessions": 2.0, "chat": 1.3}
BASELINES = {"sessions": ["boto3"], "chat": ["boto3", "openai", "starlette"]}
FUNCTIONS = {
    "sessions": "SessionsFunction",
    "chat": "ChatFunction",
    "tool_worker": "ToolWorkerFunction",
    "continuation": "ContinuationFunction",
    "callback": "CallbackFunction",
}
# Each function's first request: what it is, and the sample event of events/ that makes it.
FIRST_REQUESTS = {
    "sessions": ("GET /sessions", "sessions-list"),
    "chat": ("GET /ready, GET /health", ""),
    "tool_worker": ("run a tool (no such operation)", "toolworker-run-tool"),
    "continuation": ("finish step (no such operation)", "continuation-finish"),
    "callback": ("GET /health", "sessions-health"),
}
SNAPSTART = ("sessions", "tool_worker", "continuation", "callback")
# cryptography.hazmat: its algorithms (redis only reads the package's version).
HEAVY = ("aws_xray_sdk", "boto3", "cryptography.hazmat", "jwt", "redis", "openai", "uvicorn")

# Runs in a fresh interpreter. argv[1]: a JSON job {kind, modules | dir, event, port}. Prints one JSON line last.
CHILD = (
    r"""
import json, sys, time
job = json.loads(sys.argv[1])
start = time.perf_counter()
"""
    + CHILD_PRELUDE
    + r"""

status = init = end = init_rss = heavy_init = None


def heavy():
    return [m for m in job.get("heavy", []) if m in sys.modules]


kind = job["kind"]
if kind == "baseline":
    for name in job["modules"]:
        __import__(name)
    init = end = time.perf_counter()
    init_rss = rss_mb()
elif kind == "chat":
    # run.sh: python -m chatcore.web.serve app:asgi_app (PYTHONPATH: the layer and $LAMBDA_TASK_ROOT)
    import asyncio
    from chatcore.web.serve import server

    sys.path.insert(0, job["dir"])
    server = server("app:asgi_app", port=job["port"])

    async def get(path):
        reader, writer = await asyncio.open_connection("127.0.0.1", job["port"])
        writer.write(f"GET {path} HTTP/1.1\r\nhost: lambda\r\nconnection: close\r\n\r\n".encode())
        await writer.drain()
        head = await reader.read()
        writer.close()
        return int(head.split(b" ", 2)[1])

    async def main():
        global init, init_rss, status, end, heavy_init
        serving = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.001)
        ready = await get("/ready")
        init = time.perf_counter()  # the adapter's init ends with its first successful readiness request
        init_rss, heavy_init = rss_mb(), heavy()
        status = [ready, await get("/health")]
        end = time.perf_counter()  # before the shutdown: uvicorn polls should_exit every 0.1 s
        server.should_exit = True
        await serving

    asyncio.run(main())
elif kind == "restore":
    # SnapStart, simulated: init and the before-snapshot hook, then a fork (the restored environment: the same
    # memory; Python's re-seeding of `random` at fork, which a restore does not do, undone) runs the after-restore
    # hook and the first request.
    import os, random

    sys.path.insert(0, job["dir"])
    import app
    from chatcore import handlers, snapstart

    snapstart.before_snapshot(getattr(handlers, job["modules"]))
    state = random.getstate()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        random.setstate(state)
        begin = time.perf_counter()
        snapstart.after_restore()
        answer = app.handler(job["event"], Context())
        took = time.perf_counter() - begin
        os.write(write, json.dumps([took, answer.get("statusCode", 200), rss_mb()]).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        took, status, init_rss = json.loads(pipe.read())
    os.waitpid(pid, 0)
    start, init, end = 0.0, 0.0, took
else:
    sys.path.insert(0, job["dir"])  # the function's folder, as Lambda's runtime puts it on sys.path
    import app

    init = time.perf_counter()
    init_rss, heavy_init = rss_mb(), heavy()
    status = app.handler(job["event"], Context()).get("statusCode", 200)
    end = time.perf_counter()
print(json.dumps({
    "init": init - start, "total": end - start, "init_rss_mb": init_rss, "peak_rss_mb": rss_mb(),
    "status": status, "heavy_init": heavy_init, "heavy": heavy(),
}))
"""
)


@dataclass
class Sample:
    init: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    init_rss_mb: list[float] = field(default_factory=list)
    peak_rss_mb: list[float] = field(default_factory=list)
    heavy_init: list[str] = field(default_factory=list)
    heavy: list[str] = field(default_factory=list)

    def add(self, result: dict[str, Any]) -> None:
        self.init.append(result["init"] * 1000)
        self.total.append(result["total"] * 1000)
        self.init_rss_mb.append(result["init_rss_mb"])
        self.peak_rss_mb.append(result["peak_rss_mb"])
        self.heavy_init, self.heavy = result["heavy_init"] or [], result["heavy"]


@dataclass
class FunctionResult:
    function: str
    first_request: str
    init_ms: float
    total_ms: float
    init_rss_mb: float
    peak_rss_mb: float
    heavy_at_init: list[str]
    heavy_after_first_request: list[str]
    baseline: str | None = None
    baseline_ms: float | None = None
    ratio: float | None = None
    target: float | None = None
    snapstart_restore_ms: float | None = None
    top_imports_ms: dict[str, float] = field(default_factory=dict)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def lambda_runtime(into: Path) -> Path:
    """What Lambda's python3.12 runtime adds to ``sys.path`` after the layers, as far as the baselines need it: boto3
    and s3transfer (the functions import neither), copied from this environment and compiled as the runtime ships
    them, so a baseline's import is not slowed by compiling what Lambda's is not."""
    runtime = into / "runtime"
    for package in ("boto3", "s3transfer"):
        source = Path(__import__(package).__file__ or "").parent
        shutil.copytree(source, runtime / package, ignore=shutil.ignore_patterns("__pycache__"))
    compileall.compile_dir(runtime, quiet=1, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    return runtime


class Environments:
    """Warm moto and redis-server, the table and the stack's secrets, and each function's environment. With
    ``layer`` (a built layer's ``python`` folder), every process imports as in Lambda: the function's folder, the
    layer, then the runtime's boto3, no site-packages."""

    def __init__(self, layer: Path | None = None, work: Path | None = None) -> None:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self.moto = MotoServer().start()
        self.redis = RedisServer().start()
        aws = {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": self.moto.url,
        }
        os.environ.update(aws)
        os.environ.pop("AWS_PROFILE", None)
        table = f"bench-{uuid.uuid4().hex[:12]}"
        boto3.client("dynamodb").create_table(**create_table_kwargs(table))
        deployment, values = deploy(table, LlmApiKeySecretArn=llm_key_secret_arn())
        self.token = auth_header("bench-user", secret=values["JwtSigningSecret"])["authorization"]
        base = {k: v for k, v in os.environ.items() if k not in SETTING_VARS and not k.startswith("POWERTOOLS_")}
        self.env: dict[str, dict[str, str]] = {}
        for name, logical_id in FUNCTIONS.items():
            env = {**base, **aws, **deployment.environment(logical_id)}
            if "REDIS_URL" in env:  # the functions the template gives the cache
                env["REDIS_URL"] = self.redis.url
            self.env[name] = env
        self.baseline_env = {**base, **aws}
        self.isolated = layer is not None
        if layer is not None:
            assert work is not None
            path = f"{layer}{os.pathsep}{lambda_runtime(work)}"
            for env in (*self.env.values(), self.baseline_env):
                env["PYTHONPATH"] = path

    def job(self, name: str) -> tuple[dict[str, Any], dict[str, str]]:
        """``baseline:<function>``, ``restore:<function>`` (SnapStart, simulated) or ``<function>`` (cold)."""
        kind, _, function = name.rpartition(":")
        if kind == "baseline":
            return {"kind": "baseline", "modules": BASELINES[function]}, self.baseline_env
        job: dict[str, Any] = {"kind": kind or "cold", "dir": str(ROOT / "functions" / function), "heavy": list(HEAVY)}
        if function == "chat":
            job.update(kind="chat", port=_free_port())
            return job, self.env[function]
        event = load_event(FIRST_REQUESTS[function][1])
        if function == "sessions":
            event["headers"]["authorization"] = self.token
        job["event"] = event
        job["modules"] = "URL_HANDLER_MODULES" if function in ("sessions", "callback") else "STEP_HANDLER_MODULES"
        return job, self.env[function]

    def stop(self) -> None:
        self.redis.stop()
        self.moto.stop()


def _run(envs: Environments, name: str, *, importtime: bool = False) -> tuple[dict[str, Any], str]:
    job, env = envs.job(name)
    result, stderr = run_fresh(CHILD, [json.dumps(job)], env, importtime=importtime, isolated=envs.isolated)
    expected: Any = None if job["kind"] == "baseline" else [200, 200] if job["kind"] == "chat" else 200
    if result["status"] != expected:
        raise RuntimeError(f"{name}: the first request answered {result['status']}, expected {expected}")
    return result, stderr


def measure(runs: int, top: int, layer: Path | None = None) -> list[FunctionResult]:
    with tempfile.TemporaryDirectory(prefix="cold-start-") as work:
        return _measure(runs, top, Environments(layer, Path(work)))


def _measure(runs: int, top: int, envs: Environments) -> list[FunctionResult]:
    try:
        jobs = ["baseline:sessions", "sessions", "baseline:chat", "chat", "tool_worker", "continuation", "callback"]
        jobs += [f"restore:{name}" for name in SNAPSTART]
        for name in jobs:  # one discarded run of each (bytecode caches, OS page cache)
            _run(envs, name)
        samples = {name: Sample() for name in jobs}
        for i in range(runs):
            for name in jobs[i % len(jobs) :] + jobs[: i % len(jobs)]:
                samples[name].add(_run(envs, name)[0])
        imports = {name: import_self_times(_run(envs, name, importtime=True)[1]) for name in FUNCTIONS}
    finally:
        envs.stop()
    return [_result(name, samples, imports[name], top) for name in FUNCTIONS]


def _result(name: str, samples: dict[str, Sample], imports: Counter[str], top: int) -> FunctionResult:
    s = samples[name]
    result = FunctionResult(
        function=FUNCTIONS[name],
        first_request=FIRST_REQUESTS[name][0],
        init_ms=statistics.median(s.init),
        total_ms=statistics.median(s.total),
        init_rss_mb=statistics.median(s.init_rss_mb),
        peak_rss_mb=statistics.median(s.peak_rss_mb),
        heavy_at_init=s.heavy_init,
        heavy_after_first_request=[m for m in s.heavy if m not in s.heavy_init],
        top_imports_ms={package: us / 1000 for package, us in imports.most_common(top)},
    )
    if name in BASELINES:
        baseline = statistics.median(samples[f"baseline:{name}"].total)
        result.baseline = "import " + ", ".join(BASELINES[name])
        result.baseline_ms = baseline
        result.ratio = result.total_ms / baseline
        result.target = TARGETS[name]
    if name in SNAPSTART:
        result.snapstart_restore_ms = statistics.median(samples[f"restore:{name}"].total)
    return result


def render(results: list[FunctionResult], runs: int, layer: Path | None = None) -> str:
    where = (
        f"from the built layer {layer} (bytecode), boto3 as Lambda's runtime has it, no site-packages"
        if layer is not None
        else "from the development environment (no bytecode: this machine writes none)"
    )
    lines = [
        f"Cold start (Python {platform.python_version()}, {platform.machine()}), median of {runs} fresh processes each",
        f"   imports {where}",
        "",
        f"   {'function':<22}{'init':>7}{'1st req':>9}{'total':>8}{'baseline':>10}{'ratio':>7}{'target':>8}"
        f"{'RSS init':>10}{'RSS peak':>10}   first request",
    ]
    for r in results:
        ratio = f"{r.ratio:.2f}x" if r.ratio is not None else "-"
        target = f"{r.target:.1f}x" if r.target is not None else "-"
        baseline = f"{r.baseline_ms:.0f}" if r.baseline_ms is not None else "-"
        lines.append(
            f"   {r.function:<22}{r.init_ms:>7.0f}{r.total_ms - r.init_ms:>9.0f}{r.total_ms:>8.0f}"
            f"{baseline:>10}{ratio:>7}{target:>8}{r.init_rss_mb:>8.0f}MB{r.peak_rss_mb:>8.0f}MB   {r.first_request}"
        )
    lines += [
        "   (ms; init = importing the handler module, for chat uvicorn up to its first /ready answer; total = init +",
        "    the first request, against warm moto and redis-server. Baselines, same run: "
        + "; ".join(f"{r.function} vs `{r.baseline}`" for r in results if r.baseline)
        + ")",
        "",
        "   SnapStart, simulated: the after-restore hook + the same first request, in a fork of a process that ran",
        "   init and the before-snapshot hook (Lambda's restore of the snapshot itself is not in it)",
    ]
    for r in results:
        if r.snapstart_restore_ms is not None:
            lines.append(
                f"   {r.function:<22}{r.snapstart_restore_ms:>7.0f} ms   (cold: {r.total_ms:.0f} ms,"
                f" {r.total_ms / r.snapstart_restore_ms:.0f}x as long)"
            )
    lines += ["", "   Heavy modules loaded (of " + ", ".join(HEAVY) + "):"]
    lines += [
        f"   {r.function:<22}at init: {', '.join(r.heavy_at_init) or 'none'};"
        f" by the first request: {', '.join(r.heavy_after_first_request) or 'none'}"
        for r in results
    ]
    lines += ["", "   Top import-time contributors (self time summed per package, one `python -X importtime` run):"]
    for r in results:
        total = sum(r.top_imports_ms.values())
        parts = ", ".join(f"{package} {ms:.0f}" for package, ms in r.top_imports_ms.items())
        lines.append(f"   {r.function:<22}{parts}  (top {len(r.top_imports_ms)}: {total:.0f} ms)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=15, help="fresh processes per function and baseline")
    parser.add_argument("--top", type=int, default=8, help="packages listed by import time")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON")
    parser.add_argument(
        "--layer",
        type=Path,
        metavar="DIR",
        help="import from this built layer (e.g. .aws-sam/build/ChatCoreLayer/python), as deployed: see the docstring",
    )
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be >= 1")
    layer = args.layer.resolve() if args.layer else None
    results = measure(args.runs, args.top, layer)
    print(render(results, args.runs, layer))
    if args.json:
        payload = {"python": platform.python_version(), "runs": args.runs, "functions": [asdict(r) for r in results]}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
