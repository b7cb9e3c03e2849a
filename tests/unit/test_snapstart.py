"""SnapStart hooks (chatcore.snapstart): a snapshot simulated by fork.

A process runs a function's init and the before-snapshot hook, then forks: each child is a "restored environment"
holding the same memory, as Lambda's restores of one snapshot do (and, as there, each child's kernel random source is
its own; Python's own re-seeding of ``random`` at fork, which a restore does not do, is undone). The children run the after-restore hook, or not, and report what they draw and which clients they use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from chatcore import handlers, snapstart
from tests.support.handlers import load_event
from tests.support.tokens import SECRET, make_token

ROOT = Path(__file__).resolve().parents[2]

SIMULATION = textwrap.dedent(
    """
    import asyncio, json, os, random, sys
    sys.path.insert(0, "functions/sessions")
    import app  # the function's init
    from chatcore import handlers, snapstart
    from chatcore.container import default_container
    from chatcore.models import new_id

    snapstart.before_snapshot(handlers.URL_HANDLER_MODULES)
    container = default_container()
    loop = asyncio.new_event_loop()  # a loop that outlives the snapshot, with a Redis client on it


    async def redis_client():
        return container.connector.client()


    snapshot = {
        "dynamodb": container.aws.dynamodb(),
        "redis": loop.run_until_complete(redis_client()),
        "llm": container.llm.client,
    }


    random_state = random.getstate()


    def restored(run_hook):
        # fork re-seeds `random` in the child (os.register_at_fork); a restore does not: put back what the
        # snapshot held.
        random.setstate(random_state)
        if run_hook:
            snapstart.after_restore()
        now = {
            "dynamodb": default_container().aws.dynamodb(),
            "redis": loop.run_until_complete(redis_client()),
            "llm": default_container().llm.client,
        }
        return {
            "random": [random.random() for _ in range(4)],
            "ids": [new_id("msg_") for _ in range(4)],
            "same_container": default_container() is container,
            "same_clients": {name: now[name] is client for name, client in snapshot.items()},
        }


    results = []
    for run_hook in (True, True, False, False):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            os.write(write, json.dumps(restored(run_hook)).encode())
            os._exit(0)
        os.close(write)
        with os.fdopen(read) as pipe:
            results.append(json.loads(pipe.read()))
        os.waitpid(pid, 0)
    print(json.dumps(results))
    """
)


def _run(script: str, env: dict[str, str], *args: str) -> Any:
    proc = subprocess.run(
        [sys.executable, "-c", script, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture
def function_env(table_name: str, redis_url: str) -> dict[str, str]:
    """A sessions function's environment against moto and a real redis-server (as the template sets it, with the
    secrets as plain values)."""
    return {
        **os.environ,
        "CHAT_TABLE_NAME": table_name,
        "REDIS_URL": redis_url,
        "JWT_SECRET": SECRET,
        "LLM_API_KEY": "sk-test",
        "CALLBACK_SECRET": "c" * 40,
        "STATE_MACHINE_ARN": "arn:aws:states:us-east-1:123456789012:stateMachine:chat-test-tool-operation",
        "POWERTOOLS_METRICS_DISABLED": "true",
    }


def test_restored_environments_draw_their_own_randomness_and_ids_and_never_reuse_a_client(function_env):
    hooked_a, hooked_b, plain_a, plain_b = _run(SIMULATION, function_env)
    # The hazard is real: without the hook, two restores of one snapshot draw the same "random" numbers ...
    assert plain_a["random"] == plain_b["random"]
    assert all(plain_a["same_clients"].values())
    # ... and with it they do not, and every client that held connections or credentials is a new one.
    assert hooked_a["random"] != hooked_b["random"]
    assert not set(hooked_a["random"]) & set(plain_a["random"])
    for hooked in (hooked_a, hooked_b):
        assert hooked["same_container"]  # settings and parts stay; only the clients are renewed
        assert hooked["same_clients"] == {"dynamodb": False, "redis": False, "llm": False}
    # Ids come from the kernel's random source: unique across restores with or without the hook.
    ids = [i for result in (hooked_a, hooked_b, plain_a, plain_b) for i in result["ids"]]
    assert len(set(ids)) == len(ids) == 16


PRIMED_FIRST_REQUEST = textwrap.dedent(
    """
    import json, sys
    function, modules, event = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    sys.path.insert(0, "functions/" + function)
    import app
    from chatcore import handlers, snapstart

    snapstart.before_snapshot(getattr(handlers, modules))
    snapstart.after_restore()
    before = set(sys.modules)


    class Context:
        function_name = "test"
        memory_limit_in_mb = 1024
        invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:test"
        aws_request_id = "req-1"

        def get_remaining_time_in_millis(self):
            return 30000


    result = app.handler(event, Context())
    print(json.dumps({"result": result, "imported": sorted(set(sys.modules) - before)}))
    """
)


@pytest.mark.parametrize(
    ("function", "modules", "event", "expected"),
    [
        ("sessions", "URL_HANDLER_MODULES", "sessions-list", {"statusCode": 200}),
        ("callback", "URL_HANDLER_MODULES", "sessions-health", {"statusCode": 200}),
        ("continuation", "STEP_HANDLER_MODULES", "continuation-finish", {"status": "unknown"}),
        ("tool_worker", "STEP_HANDLER_MODULES", "toolworker-run-tool", {"ok": False}),  # no such operation
    ],
)
def test_a_primed_snapshot_leaves_nothing_for_the_first_request_to_import(
    function_env, function, modules, event, expected
):
    """Everything the first invocation imports (its app or engine built, its AWS clients, Redis) was imported
    before the snapshot: ``handlers.*_MODULES`` is complete."""
    payload = load_event(event)
    if "headers" in payload:
        payload["headers"]["authorization"] = f"Bearer {make_token('snap-user')}"
    out = _run(PRIMED_FIRST_REQUEST, function_env, function, modules, json.dumps(payload))
    assert expected.items() <= out["result"].items(), out["result"]
    assert out["imported"] == [], out["imported"]


def test_nothing_is_read_before_the_snapshot_but_the_environment(monkeypatch: pytest.MonkeyPatch):
    """A secret read before the snapshot would live in it until the next publish, and credentials resolved then
    would be shared by every restore: priming reads no setting that names a secret and resolves no credentials; it
    builds the default container (for its botocore session), not the container's settings."""
    import botocore.session

    from chatcore.container import built_default_container, set_default_container

    def no_credentials(self: object) -> None:
        raise AssertionError("credentials resolved before the snapshot")

    monkeypatch.setattr(botocore.session.Session, "get_credentials", no_credentials)
    monkeypatch.setenv("JWT_SECRET_ARN", "arn:aws:secretsmanager:us-east-1:123456789012:secret:never-read")
    monkeypatch.setenv("STATE_MACHINE_ARN", "arn:aws:states:us-east-1:123456789012:stateMachine:m")
    set_default_container(None)
    try:
        snapstart.before_snapshot(handlers.URL_HANDLER_MODULES)
        container = built_default_container()
        assert container is not None and "settings" not in vars(container)
    finally:
        set_default_container(None)


def test_a_restore_keeps_the_primed_session_and_resolves_the_credentials_after(monkeypatch: pytest.MonkeyPatch):
    """The botocore session built before the snapshot (~15 ms of handler registration) is used by the restored
    environment's first client, which resolves the credentials then; a session that built a client is not kept."""
    import botocore.session

    from chatcore.aws import AwsClients

    sessions: list[object] = []
    resolved: list[object] = []
    new_session, get_credentials = botocore.session.Session.__init__, botocore.session.Session.get_credentials

    def counting_init(self: botocore.session.Session, *args: object, **kwargs: object) -> None:
        sessions.append(self)
        new_session(self, *args, **kwargs)

    def recording_credentials(self: botocore.session.Session) -> object:
        resolved.append(self)
        return get_credentials(self)

    monkeypatch.setattr(botocore.session.Session, "__init__", counting_init)
    monkeypatch.setattr(botocore.session.Session, "get_credentials", recording_credentials)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    aws = AwsClients()
    aws.prepare(["dynamodb"])  # before the snapshot (the models are loaded through a throwaway session)
    primed = len(sessions)
    assert resolved == []
    aws.renew()  # after the restore
    aws.dynamodb()
    assert len(sessions) == primed and len(resolved) == 1  # the primed session, its credentials resolved now
    aws.renew()  # a second restore of an environment that has built clients: their session goes too
    aws.dynamodb()
    assert len(sessions) == primed + 1 and len(resolved) == 2 and resolved[1] is sessions[-1]


MODELS_LOADED = textwrap.dedent(
    """
    import json
    from chatcore.aws import AwsClients, load_service_models, service_models

    load_service_models(["dynamodb", "secretsmanager"])
    read = []
    files = service_models().file_loader
    load_file = files.load_file
    files.load_file = lambda path: read.append(path) or load_file(path)
    aws = AwsClients()
    aws.dynamodb(), aws.secretsmanager(), aws.stepfunctions()
    print(json.dumps(read))
    """
)


def test_the_service_models_are_loaded_before_the_snapshot(function_env):
    """After ``load_service_models`` a client of those services reads nothing from botocore's data files (one of
    another service does: the check is real)."""
    read = _run(MODELS_LOADED, function_env)
    assert read and all("/states/" in path or "stepfunctions" in path for path in read), read


def test_a_misconfigured_environment_is_left_for_the_first_request_to_report(monkeypatch: pytest.MonkeyPatch):
    from chatcore.container import built_default_container, set_default_container

    monkeypatch.setenv("AUTH_MODE", "kerberos")
    set_default_container(None)
    snapstart.before_snapshot(["chatcore.web.misconfigured"])  # no error: the app answers 503 naming the setting
    assert built_default_container() is None


def test_deferred_models_are_built_before_the_snapshot():
    from chatcore.web.schemas import DeleteSessionsOut

    snapstart.build_deferred_models()
    assert DeleteSessionsOut.__pydantic_complete__
    assert snapstart.build_deferred_models() == 0  # nothing left


def test_hooks_register_only_where_the_snapstart_runtime_is(monkeypatch: pytest.MonkeyPatch):
    assert snapstart.register(["json"]) is False  # no snapshot_restore_py outside Lambda's managed runtime
    registered: list[tuple[str, Any, tuple[Any, ...]]] = []
    runtime = type(sys)("snapshot_restore_py")
    runtime.register_before_snapshot = lambda func, *args: registered.append(("before", func, args))
    runtime.register_after_restore = lambda func, *args: registered.append(("after", func, args))
    monkeypatch.setitem(sys.modules, "snapshot_restore_py", runtime)
    assert snapstart.register(["json"]) is True
    assert registered == [("before", snapstart.before_snapshot, (("json",),)), ("after", snapstart.after_restore, ())]
