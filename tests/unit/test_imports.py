"""Cold-start discipline: what the handlers pull in at init, what loads only when used, and the chatcore error
boundary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from local.template import load_template
from tests.support.tokens import SECRET, make_token

ROOT = Path(__file__).resolve().parents[2]

# Third-party packages that cost a cold start tens to hundreds of milliseconds each (bench/cold_start.py lists them).
HEAVY = {
    "aws_xray_sdk",  # Powertools Tracer: never (Lambda's active tracing needs no SDK)
    "wrapt",
    "boto3",  # chatcore uses botocore alone
    "s3transfer",
    "cryptography",  # RS256/ES256 only: loaded with PyJWT when AUTH_MODE=jwks builds its Authenticator
    "jwt",
    "redis",  # with the first Redis client
    "openai",  # the functions that call the LLM
    "httpx",
    "httpx2",
    "uvicorn",  # run.sh's server, not the app module
    "mangum",  # with the first Function URL invocation
}
# What each function's module loads at init, exactly: a heavy module appearing (or one that should be there going)
# fails. The functions that run chat turns import the LLM client with the turn engine.
AT_INIT = {
    "SessionsFunction": set(),
    "CallbackFunction": set(),
    "ChatFunction": {"openai", "httpx2"},
    "ChatBufferedFunction": {"openai", "httpx2"},
    "ToolWorkerFunction": {"openai", "httpx2"},
    "ContinuationFunction": {"openai", "httpx2"},
}
# chatcore modules that a function which never runs a chat turn must not load.
TURN_MODULES = {"chatcore.stream", "chatcore.turns", "chatcore.llm", "chatcore.replay", "chatcore.tools"}


def _last_json(code: str, env: dict[str, str] | None = None) -> Any:
    """The JSON of the last line ``code`` prints in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT, env=env or dict(os.environ)
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _run(code: str, env: dict[str, str] | None = None) -> set[str]:
    """The modules loaded after ``code`` runs in a fresh interpreter."""
    return set(_last_json(code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n", env))


def _on_path(path: str) -> str:
    """Code that puts a handler's folder on ``sys.path``, as Lambda does (``_import_app`` then imports it)."""
    return f"import importlib.util, sys\nsys.path.insert(0, {str(Path(path).parent)!r})\n"


def _import_app(path: str) -> str:
    return (
        f"spec = importlib.util.spec_from_file_location('app', {path!r})\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
    )


def _modules_after_import(path: str) -> set[str]:
    return _run(_on_path(path) + _import_app(path))


def _packages(modules: set[str]) -> set[str]:
    return {name.split(".")[0] for name in modules}


def _functions() -> dict[str, str]:
    resources = load_template()["Resources"]
    return {
        name: str(ROOT / r["Properties"]["CodeUri"] / "app.py")
        for name, r in resources.items()
        if r["Type"] == "AWS::Serverless::Function"
    }


def test_every_function_of_the_template_is_pinned():
    assert set(_functions()) == set(AT_INIT)


@pytest.mark.parametrize("function", sorted(AT_INIT))
def test_each_function_loads_only_its_pinned_heavy_modules_at_init(function):
    modules = _modules_after_import(_functions()[function])
    assert _packages(modules) & HEAVY == AT_INIT[function]
    if "openai" not in AT_INIT[function]:
        assert not modules & TURN_MODULES, sorted(modules & TURN_MODULES)


# Counts the garbage collections that start while ``code`` runs in a fresh interpreter; ``prepare`` runs before, and
# a collection after it leaves the young generation empty.
_COLLECTIONS = """
import gc, json
{prepare}
gc.collect()
collections = []
gc.callbacks.append(lambda phase, info: phase == "start" and collections.append(info["generation"]))
{code}
print(json.dumps({{"collections": collections, "enabled": gc.isenabled(), "frozen": gc.get_freeze_count()}}))
"""


def _collections_while(code: str, prepare: str) -> dict[str, object]:
    result: dict[str, object] = _last_json(_COLLECTIONS.format(prepare=prepare, code=code))
    return result


@pytest.mark.parametrize("function", sorted(AT_INIT))
def test_each_function_imports_without_a_garbage_collection_and_freezes_what_it_built(function):
    path = _functions()[function]
    result = _collections_while(_import_app(path), prepare=_on_path(path) + "import chatcore.coldstart")
    assert result["collections"] == []  # about a hundred collections without the pause (chatcore.coldstart)
    assert result["enabled"] is True
    assert isinstance(result["frozen"], int) and result["frozen"] > 10_000  # none without the freeze


def test_the_chat_server_imports_uvicorn_and_the_app_without_a_garbage_collection():
    result = _collections_while(
        "srv = server('app:asgi_app', port=8080)\n"
        "assert srv.config.loaded and 'app' in sys.modules and 'uvicorn.protocols.http.h11_impl' in sys.modules\n",
        prepare=f"import sys\nsys.path.insert(0, {str(ROOT / 'functions' / 'chat')!r})\n"
        "from chatcore.web.serve import server",
    )
    assert result["collections"] == []
    assert result["enabled"] is True


def test_hs256_authentication_loads_neither_pyjwt_nor_cryptography():
    token = make_token("alice")
    modules = _run(
        "import asyncio\n"
        "from chatcore.auth import Authenticator\n"
        "from chatcore.config import Settings\n"
        f"auth = Authenticator(Settings(jwt_secret={SECRET!r}))\n"
        f"assert asyncio.run(auth.authenticate('Bearer {token}')).user_id == 'alice'\n"
    )
    assert not _packages(modules) & {"jwt", "cryptography"}


def test_jwks_mode_loads_pyjwt_when_its_authenticator_is_built():
    settings = "Settings(auth_mode='jwks', jwks_url='https://issuer.example/.well-known/jwks.json')"
    before = _run("from chatcore.auth import Authenticator\nfrom chatcore.config import Settings\n" + settings)
    after = _run(
        f"from chatcore.auth import Authenticator\nfrom chatcore.config import Settings\nAuthenticator({settings})"
    )
    assert not _packages(before) & {"jwt", "cryptography"}
    assert {"jwt", "cryptography"} <= _packages(after)


def test_redis_loads_with_the_first_client_and_the_cluster_client_only_when_configured():
    connector = "RedisConnector('redis://127.0.0.1:9/0', cluster={cluster})"
    code = "import asyncio\nfrom chatcore.cache import RedisConnector\nconnector = " + connector + "\n"
    assert "redis" not in _packages(_run(code.format(cluster=False)))
    for cluster, expected in ((False, "Redis"), (True, "RedisCluster")):
        made = code.format(cluster=cluster) + (
            "async def made():\n"
            "    client = connector.client()\n"
            f"    assert type(client).__name__ == {expected!r}, type(client)\n"
            "    await client.aclose()\n"
            "asyncio.run(made())\n"
        )
        assert "redis" in _packages(_run(made))


def test_sessions_handler_does_not_import_the_llm_client():
    modules = _modules_after_import(str(ROOT / "functions/sessions/app.py"))
    assert not {m for m in modules if m == "openai" or m.startswith("openai.")}
    assert "moto" not in modules and "local" not in modules


def test_third_party_clients_are_imported_only_by_their_adapters():
    package = ROOT / "layers/chatcore/chatcore"
    allowed = {
        # chatcore.aws.call is the one place botocore errors are translated; chatcore.dynamo and
        # chatcore.operations make their requests through it.
        "boto3": {"aws.py"},
        "botocore": {"aws.py"},
        "redis": {"cache.py", "replay.py"},
        "jwt": {"auth.py"},
        "openai": {"llm.py"},
    }
    for source in package.rglob("*.py"):
        text = source.read_text()
        for lib, owners in allowed.items():
            imports = f"import {lib}" in text or f"from {lib}" in text
            if imports:
                assert source.relative_to(package).as_posix() in owners, f"{source.relative_to(ROOT)} imports {lib}"


def test_os_environ_only_in_config():
    for source in (ROOT / "layers/chatcore/chatcore").rglob("*.py"):
        if source.name != "config.py":
            assert "os.environ" not in source.read_text(), source


def test_the_chat_server_starts_uvicorn_without_its_command_line(tmp_path):
    """run.sh's launcher serves the app through uvicorn (lifespan, a request) without importing click and the
    supervisors that `python -m uvicorn` loads."""
    (tmp_path / "tiny.py").write_text(
        "async def app(scope, receive, send):\n"
        "    if scope['type'] == 'lifespan':\n"
        "        while (await receive())['type'] != 'lifespan.shutdown':\n"
        "            await send({'type': 'lifespan.startup.complete'})\n"
        "        await send({'type': 'lifespan.shutdown.complete'})\n"
        "        return\n"
        "    await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n"
        "    await send({'type': 'http.response.body', 'body': b'ok'})\n"
    )
    modules = _run(
        "import asyncio, socket, sys\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        "from chatcore.web.serve import server\n"
        "with socket.socket() as s:\n"
        "    s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]\n"
        "srv = server('tiny:app', port=port)\n"
        "async def main():\n"
        "    task = asyncio.create_task(srv.serve())\n"
        "    while not srv.started:\n"
        "        await asyncio.sleep(0.01)\n"
        "    reader, writer = await asyncio.open_connection('127.0.0.1', port)\n"
        "    writer.write(b'GET /ready HTTP/1.1\\r\\nhost: x\\r\\nconnection: close\\r\\n\\r\\n')\n"
        "    answer = await reader.read()\n"
        "    writer.close()\n"
        "    assert answer.startswith(b'HTTP/1.1 200') and b'\\r\\nok\\r\\n' in answer, answer\n"
        "    srv.should_exit = True\n"
        "    await task\n"
        "asyncio.run(main())\n"
    )
    assert "uvicorn.server" in modules and "uvicorn.lifespan.on" in modules
    assert not {"click", "uvicorn.main", "uvicorn.supervisors"} & modules


def test_run_sh_starts_the_launcher():
    script = (ROOT / "functions/chat/run.sh").read_text()
    assert 'exec python -m chatcore.web.serve --port "${PORT:-8080}" app:asgi_app' in script
