"""Fixtures of the build smoke tests: the two ``sam build`` runs (started together), the loopback services the
built handlers talk to, and one warm "container" per built function."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import redis

from local.invoke import sample_environment, seed
from local.moto_server import MotoServer
from local.offline_llm import OfflineLLM
from local.template import create_table_kwargs
from tests.sam_build.sam import (
    HOST_ARCH,
    Build,
    SamMissing,
    Services,
    build_area,
    finish_build,
    functions,
    lambda_environment,
    sam_executable,
    start_build,
)
from tests.support.redis_server import RedisServer
from tests.support.template_eval import Deployment

ARCHITECTURES = ("arm64", "x86_64")
RUNNER = Path(__file__).with_name("handler_runner.py")
REPORT: list[str] = []  # printed at the end of the run (timings, sizes)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if REPORT:
        terminalreporter.section("sam build")
        for line in REPORT:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def sam_builds() -> Iterator[dict[str, Build]]:
    """Both architectures' builds, run side by side (each is mostly pip start-ups)."""
    missing = ""
    try:
        sam_executable()
    except SamMissing as exc:
        missing = str(exc)
    if missing:  # a failure, not a skip: CI installs the SAM CLI (.ci/run), and so does ./run test
        pytest.fail(missing, pytrace=False)
    with build_area() as (area, cached):
        started = time.monotonic()
        running: dict[str, Any] = {}
        try:
            for arch in ARCHITECTURES:
                running[arch] = start_build(area, arch, cached)
            builds = {arch: finish_build(arch, cached, *running[arch]) for arch in ARCHITECTURES}
        finally:
            for proc, *_ in running.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()
        how = "cached (--cached, ~/.cache/sam-build)" if cached else "clean"
        each = ", ".join(f"{arch} {b.seconds:.1f} s" for arch, b in builds.items())
        REPORT.append(f"sam build, {how}: {each}; both {time.monotonic() - started:.1f} s wall-clock")
        yield builds


@pytest.fixture(scope="session")
def host_build(sam_builds: dict[str, Build]) -> Build:
    """The build this machine can run: its handlers are imported and invoked here."""
    return sam_builds[HOST_ARCH]


@pytest.fixture(scope="session")
def services(moto_server: MotoServer, redis_server: RedisServer) -> Iterator[Services]:
    """A table in moto, a real redis-server and the offline LLM, all on loopback, for the built handlers."""
    table = f"built-{uuid.uuid4().hex[:8]}"
    client = boto3.client("dynamodb", endpoint_url=moto_server.url)
    client.create_table(**create_table_kwargs(table))
    # The stack's secrets hold what the sample events are signed with (events/env.json).
    signed_with = sample_environment()
    store = boto3.client("secretsmanager", endpoint_url=moto_server.url)
    secrets = {
        logical_id: store.create_secret(Name=f"built-{uuid.uuid4().hex[:6]}-{logical_id}", SecretString=value)["ARN"]
        for logical_id, value in (
            ("JwtSigningSecret", signed_with["JWT_SECRET"]),
            ("CallbackSigningSecret", signed_with["CALLBACK_SECRET"]),
        )
    }
    deployment = Deployment(refs={"ChatTable": table, **secrets}, stack_name="build-smoke")
    deployment.attributes["CallbackFunctionUrl.FunctionUrl"] = "http://127.0.0.1:9/callback/"
    with OfflineLLM() as llm:
        yield Services(
            aws_endpoint=moto_server.url,
            table=table,
            redis_url=redis_server.url,
            llm_base_url=llm.base_url,
            deployment=deployment,
        )
    client.delete_table(TableName=table)


def reset_state(services: Services) -> None:
    """Every event starts from the demo sessions alone, as `python -m local.invoke --seed` does."""
    from chatcore.config import Settings
    from chatcore.container import Container

    table = boto3.resource("dynamodb", endpoint_url=services.aws_endpoint).Table(services.table)
    items = table.scan(ProjectionExpression="PK, SK")["Items"]
    with table.batch_writer() as batch:
        for item in items:
            batch.delete_item(Key={"PK": item["PK"], "SK": item["SK"]})
    client = redis.Redis.from_url(services.redis_url)
    client.flushall()
    client.close()

    async def seed_demo() -> None:
        service = Container(Settings(table_name=services.table, redis_url="", auth_mode="hs256")).sessions
        try:
            await seed(service)
        finally:
            await service.aclose()

    asyncio.run(seed_demo())


class BuiltFunction:
    """One built function in an isolated interpreter: its build folder and the built layer on sys.path and
    nothing else, kept warm across invocations like a Lambda container."""

    def __init__(self, logical_id: str, build: Build, services: Services) -> None:
        self.logical_id = logical_id
        task_root = build.function_dir(logical_id)
        handler = functions()[logical_id]["Handler"]
        read_fd, write_fd = os.pipe()
        python = getattr(sys, "_base_executable", sys.executable)  # the interpreter, not the dev venv
        self._stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed in close()
        started = time.monotonic()
        self.proc = subprocess.Popen(
            [python, "-I", "-S", "-B", str(RUNNER), str(task_root), str(build.layer_python), handler, str(write_fd)],
            cwd=task_root,
            env=lambda_environment(logical_id, task_root, services),
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,  # the handlers' logs
            stderr=self._stderr,
            pass_fds=(write_fd,),
            text=True,
        )
        os.close(write_fd)
        self._results = os.fdopen(read_fd)
        ready = self._read()
        self.init_seconds = time.monotonic() - started
        if "error" in ready:
            self.close()
            raise AssertionError(f"{logical_id}: the built handler failed to import:\n{ready['error']}")
        self.invoke_seconds = 0.0

    def _read(self) -> dict[str, Any]:
        line = self._results.readline()
        if not line:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self._stderr.seek(0)
            raise AssertionError(f"{self.logical_id}: the handler process died:\n{self._stderr.read()[-4000:]}")
        result: dict[str, Any] = json.loads(line)
        return result

    def request(self, payload: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(payload) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def invoke(self, event: dict[str, Any]) -> Any:
        started = time.monotonic()
        result = self.request({"event": event})
        self.invoke_seconds += time.monotonic() - started
        if "error" in result:
            raise AssertionError(f"{self.logical_id} raised:\n{result['error']}")
        return result["response"]

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._stderr.close()
        self._results.close()


@pytest.fixture(scope="session")
def built_functions(host_build: Build, services: Services) -> Iterator[dict[str, BuiltFunction]]:
    """Logical id -> its warm built function, started on first use."""
    started: dict[str, BuiltFunction] = {}

    class Lazy(dict[str, BuiltFunction]):
        def __missing__(self, logical_id: str) -> BuiltFunction:
            started[logical_id] = self[logical_id] = BuiltFunction(logical_id, host_build, services)
            return started[logical_id]

    yield Lazy()
    if started:
        init = sum(f.init_seconds for f in started.values())
        run = sum(f.invoke_seconds for f in started.values())
        REPORT.append(
            f"built handlers ({host_build.arch}): {len(started)} functions imported in {init:.1f} s, "
            f"sample events run in {run:.1f} s"
        )
    for function in started.values():
        function.close()
