"""The deployment artefacts agree with the code: template lint, handlers, layer requirements, sample events."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

from local.template import load_template

ROOT = Path(__file__).resolve().parent.parent


def _functions() -> dict[str, dict]:
    resources = load_template()["Resources"]
    return {name: r["Properties"] for name, r in resources.items() if r["Type"] == "AWS::Serverless::Function"}


def test_template_passes_cfn_lint():
    result = subprocess.run(
        [str(Path(sys.executable).parent / "cfn-lint"), str(ROOT / "template.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_handler_exists():
    for name, props in _functions().items():
        if props["Handler"] == "run.sh":  # Lambda Web Adapter: a script starting uvicorn on module:app
            script = ROOT / props["CodeUri"] / "run.sh"
            assert script.is_file() and script.stat().st_mode & 0o111, f"{name}: run.sh missing or not executable"
            target = re.search(r"(\w+):(\w+)\s*$", script.read_text().strip())
            assert target, f"{name}: run.sh does not name module:app"
            module_file = ROOT / props["CodeUri"] / f"{target.group(1)}.py"
            assert re.search(rf"^{target.group(2)} = ", module_file.read_text(), re.MULTILINE), name
            continue
        module, _, func = props["Handler"].rpartition(".")
        source = ROOT / props["CodeUri"] / f"{module}.py"
        assert source.is_file(), name
        assert re.search(rf"^def {func}\(", source.read_text(), re.MULTILINE), f"{name}: no {func}() in {source}"


def test_layer_is_built_by_sam_for_the_target_runtime():
    layer = load_template()["Resources"]["ChatCoreLayer"]
    assert layer["Metadata"]["BuildMethod"] == "python3.12"
    assert (ROOT / layer["Properties"]["ContentUri"] / "chatcore" / "__init__.py").is_file()
    assert load_template()["Globals"]["Function"]["Runtime"] == "python3.12"


def test_layer_requirements_match_the_lock():
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    locked = {p["name"]: p["version"] for p in lock["package"] if "version" in p}
    lines = (ROOT / "layers/chatcore/requirements.txt").read_text().splitlines()
    pins = dict(line.split(";")[0].strip().split("==") for line in lines if line and not line.startswith("#"))
    assert pins, "empty layer requirements"
    for name, version in pins.items():
        assert locked.get(name) == version, f"{name}=={version} is not what uv.lock has ({locked.get(name)})"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for requirement in project:
        name = re.split(r"[\[<>=!~ ]", requirement, maxsplit=1)[0].lower()
        assert name in pins, f"runtime dependency {name} missing from the layer"


def test_functions_get_the_settings_they_need():
    env = load_template()["Globals"]["Function"]["Environment"]["Variables"]
    for key in ("CHAT_TABLE_NAME", "REDIS_URL", "AUTH_MODE", "JWT_SECRET", "JWT_ISSUER", "JWT_AUDIENCE", "JWKS_URL"):
        assert key in env, key
    config = (ROOT / "layers/chatcore/chatcore/config.py").read_text()
    read = set(re.findall(r'env(?:\.get\(|, )"([A-Z_]+)"', config))
    assert {"CHAT_TABLE_NAME", "REDIS_URL", "AUTH_MODE"} <= read


def test_function_urls():
    sessions = _functions()["SessionsFunction"]
    assert sessions["FunctionUrlConfig"]["AuthType"] == "NONE"
    assert sessions["FunctionUrlConfig"]["InvokeMode"] == "BUFFERED"


def test_chat_url_streams_through_the_web_adapter():
    chat = _functions()["ChatFunction"]
    assert chat["FunctionUrlConfig"]["InvokeMode"] == "RESPONSE_STREAM"
    env = chat["Environment"]["Variables"]
    assert env["AWS_LWA_INVOKE_MODE"] == "response_stream" and env["AWS_LAMBDA_EXEC_WRAPPER"] == "/opt/bootstrap"
    assert any("LambdaAdapterLayer" in str(layer) for layer in chat["Layers"])
    assert int(env["TURN_LEASE_SECONDS"]) > int(chat["Timeout"])
    # The buffered twin for `sam local invoke` exists in the same module.
    assert re.search(r"^def handler\(", (ROOT / chat["CodeUri"] / "app.py").read_text(), re.MULTILINE)


def test_routes_of_the_functions_are_disjoint():
    from chatcore.auth import Authenticator
    from chatcore.config import Settings
    from chatcore.runtime import build_engine
    from chatcore.sessions import build_service
    from chatcore.web.chat_app import create_chat_app
    from chatcore.web.sessions_app import create_sessions_app

    settings = Settings(jwt_secret="x" * 32)
    service = build_service(settings)
    auth = Authenticator(settings)
    sessions = {(r.path, m) for r in create_sessions_app(service, auth, settings).routes for m in r.methods or ()}
    chat = {
        (r.path, m)
        for r in create_chat_app(build_engine(settings, service), auth, settings).routes
        for m in r.methods or ()
    }
    assert sessions & chat <= {("/health", "GET"), ("/health", "HEAD")}
