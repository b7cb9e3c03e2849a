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
