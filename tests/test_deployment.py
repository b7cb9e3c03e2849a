"""The deployment artefacts agree with the code: template lint, handlers, layer requirements, sample events."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from chatcore.config import Settings
from local.template import load_template
from tests.support.deploy import SETTING_VARS

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
        assert re.search(rf"^(def {func}\(|{func} = )", source.read_text(), re.MULTILINE), (
            f"{name}: no {func} in {source}"
        )


def test_layer_is_built_by_its_makefile_for_the_target_runtime_and_architecture():
    """``sam build`` runs layers/chatcore/Makefile (bytecode, see tests/sam_build) and gives a makefile build no
    architecture or runtime: the Makefile's defaults must be the template's."""
    template = load_template()
    layer = template["Resources"]["ChatCoreLayer"]
    content = ROOT / layer["Properties"]["ContentUri"]
    assert (content / "chatcore" / "__init__.py").is_file()
    makefile = (content / "Makefile").read_text()
    assert re.search(r"^build-ChatCoreLayer:", makefile, re.MULTILINE), "no target for sam build"
    (arch,) = re.findall(r"^LAYER_ARCH \?= (\S+)$", makefile, re.MULTILINE)
    assert layer["Metadata"] == {"BuildMethod": "makefile", "BuildArchitecture": arch}
    assert layer["Properties"]["CompatibleArchitectures"] == [arch] == template["Globals"]["Function"]["Architectures"]
    runtime = template["Globals"]["Function"]["Runtime"]
    assert layer["Properties"]["CompatibleRuntimes"] == [runtime] == ["python3.12"]
    assert re.findall(r"^LAYER_PYTHON \?= (\S+)$", makefile, re.MULTILINE) == [runtime]
    assert "--python-version 3.12 --abi cp312" in makefile


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
    for key in ("CHAT_TABLE_NAME", "AUTH_MODE", "JWT_ISSUER", "JWT_AUDIENCE", "JWKS_URL"):
        assert key in env, key
    read = SETTING_VARS
    assert {"CHAT_TABLE_NAME", "REDIS_URL", "AUTH_MODE", "JWT_SECRET_ARN", "CALLBACK_SECRET_ARN"} <= read
    functions = _functions()
    # Each function is given the secrets it reads (as ARNs) and no others.
    secrets_of = {
        name: {k for k in props["Environment"]["Variables"] if k.endswith("_SECRET_ARN")}
        for name, props in functions.items()
    }
    redis = {"REDIS_URL_SECRET_ARN"}
    assert secrets_of == {
        "SessionsFunction": {"JWT_SECRET_ARN"} | redis,
        "ChatFunction": {"JWT_SECRET_ARN", "LLM_API_KEY_SECRET_ARN"} | redis,
        "ChatBufferedFunction": {"JWT_SECRET_ARN", "LLM_API_KEY_SECRET_ARN"} | redis,
        "ToolWorkerFunction": {"LLM_API_KEY_SECRET_ARN"} | redis,
        "ContinuationFunction": {"LLM_API_KEY_SECRET_ARN"} | redis,
        "CallbackFunction": {"CALLBACK_SECRET_ARN"},
    }


def _refs(node: object) -> set[str]:
    """Every name a template fragment refers to (Ref, GetAtt, and ${...} in Sub strings)."""
    if isinstance(node, dict):
        found: set[str] = set()
        for key, value in node.items():
            if key == "Ref" and isinstance(value, str):
                found.add(value)
            elif key == "Fn::GetAtt":
                found.add(value[0] if isinstance(value, list) else str(value).split(".")[0])
            elif key == "Fn::Sub":
                text = value if isinstance(value, str) else value[0]
                found |= {m.split(".")[0] for m in re.findall(r"\$\{([^}!]+)\}", text)}
                found |= _refs(value[1:] if isinstance(value, list) else [])
            else:
                found |= _refs(value)
        return found
    if isinstance(node, list):
        return set().union(*(_refs(item) for item in node)) if node else set()
    return set()


def test_no_secret_travels_as_an_environment_variable():
    template = load_template()
    secret_parameters = {name for name, p in template["Parameters"].items() if p.get("NoEcho")}
    assert secret_parameters == {"JwtSecret", "CallbackSecret", "RedisUrl"}
    environments = [template["Globals"]["Function"]["Environment"]]
    environments += [props.get("Environment", {}) for props in _functions().values()]
    for environment in environments:
        leaked = _refs(environment) & secret_parameters
        assert not leaked, f"NoEcho parameters in a function environment: {leaked}"
        for key in environment.get("Variables", {}):
            assert key not in {"JWT_SECRET", "CALLBACK_SECRET", "LLM_API_KEY"}, key
    # Secrets the deployer does not bring are generated by the stack.
    resources = template["Resources"]
    for logical_id in ("JwtSigningSecret", "CallbackSigningSecret"):
        props = resources[logical_id]["Properties"]
        assert resources[logical_id]["Type"] == "AWS::SecretsManager::Secret"
        assert "GenerateSecretString" in json.dumps(props) and "SecretString" in props


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
    # The lease is short and renewed while a turn runs: a crashed turn frees its session long before the timeout.
    lease = Settings.from_env({k: v for k, v in env.items() if isinstance(v, str)})
    assert 2 * lease.turn_lease_renew_seconds <= lease.turn_lease_seconds < int(chat["Timeout"]) / 5
    # The adapter's readiness path answers 200 whenever the app serves (also when misconfigured).
    assert env["AWS_LWA_READINESS_CHECK_PATH"] == "/ready"
    assert "LambdaAdapterLayerArm64:27" in json.dumps(chat["Layers"])  # Lambda Web Adapter 1.0.0
    # A resumed stream ends by itself before Lambda cuts it at the function's timeout.
    settings = Settings.from_env({k: v for k, v in env.items() if isinstance(v, str)})
    assert settings.resume_idle_seconds + settings.heartbeat_seconds < int(chat["Timeout"])
    # The buffered twin for `sam local invoke` exists in the same module.
    assert re.search(r"^handler = ", (ROOT / chat["CodeUri"] / "app.py").read_text(), re.MULTILINE)


def test_chat_url_cors_allows_every_request_header_the_chat_reads():
    from chatcore.web.chat_app import LEVEL_HEADER

    cors = _functions()["ChatFunction"]["FunctionUrlConfig"]["Cors"]
    assert {"authorization", "content-type", "last-event-id", LEVEL_HEADER} <= set(cors["AllowHeaders"])


def test_routes_of_the_functions_are_disjoint():
    from chatcore.auth import Authenticator
    from chatcore.config import Settings
    from chatcore.container import Container
    from chatcore.web.callback_app import create_callback_app
    from chatcore.web.chat_app import create_chat_app
    from chatcore.web.sessions_app import create_sessions_app

    settings = Settings(jwt_secret="x" * 32)
    container = Container(settings)
    service = container.sessions
    auth = Authenticator(settings)

    def routes(app) -> set[tuple[str, str]]:
        return {(r.path, m) for r in app.routes for m in r.methods or ()}

    sessions = routes(create_sessions_app(service, auth, settings))
    chat = routes(create_chat_app(container.engine, auth, settings))
    callback = routes(create_callback_app(None, settings))
    health = {("/health", "GET"), ("/health", "HEAD")}
    assert sessions & chat <= health and sessions & callback <= health and chat & callback <= health


def test_each_function_url_allows_the_methods_of_its_routes_cross_origin():
    from chatcore.auth import Authenticator
    from chatcore.config import Settings
    from chatcore.container import Container
    from chatcore.web.chat_app import create_chat_app
    from chatcore.web.sessions_app import create_sessions_app

    settings = Settings(jwt_secret="x" * 32)
    container = Container(settings)
    auth = Authenticator(settings)
    apps = {
        "SessionsFunction": create_sessions_app(container.sessions, auth, settings),
        "ChatFunction": create_chat_app(container.engine, auth, settings),
    }
    functions = _functions()
    for logical_id, app in apps.items():
        methods = {m for r in app.routes for m in r.methods or ()} - {"HEAD"}
        allowed = set(functions[logical_id]["FunctionUrlConfig"]["Cors"]["AllowMethods"])
        assert methods <= allowed, f"{logical_id}: CORS does not allow {sorted(methods - allowed)}"


def test_every_state_machine_task_names_a_function_of_the_template():
    resources = load_template()["Resources"]
    machine = resources["ToolOperationStateMachine"]["Properties"]
    definition = json.loads((ROOT / machine["DefinitionUri"]).read_text())
    substitutions = machine["DefinitionSubstitutions"]
    tasks = {name: state for name, state in definition["States"].items() if state["Type"] == "Task"}
    assert tasks
    for name, state in tasks.items():
        placeholder = state["Parameters"]["FunctionName"]
        key = re.fullmatch(r"\$\{(\w+)\}", placeholder)
        assert key, f"{name}: FunctionName must be a substitution, got {placeholder}"
        # The function's alias: SnapStart applies to its published versions only.
        target, _, attribute = substitutions[key.group(1)]["Ref"].partition(".")
        assert resources[target]["Type"] == "AWS::Serverless::Function" and attribute == "Alias", name
        assert target in SNAPSTART, name
        assert state.get("Catch"), f"{name} has no Catch"
        assert state.get("Retry"), f"{name} has no Retry"
    waits = [s for s in tasks.values() if s["Resource"].endswith(".waitForTaskToken")]
    assert waits and all("HeartbeatSecondsPath" in s and "TimeoutSecondsPath" in s for s in waits)


SNAPSTART = {"SessionsFunction", "ToolWorkerFunction", "ContinuationFunction", "CallbackFunction"}


def test_snapstart_on_the_managed_runtime_functions_through_their_alias():
    """SnapStart on the functions the managed Python runtime runs (not the Web Adapter's run.sh), each invoked
    through the alias of its published version: the Function URLs and the state machine (SAM-expanded template)."""
    template = load_template()
    functions = _functions()
    snapstart = {name for name, props in functions.items() if "SnapStart" in props}
    assert snapstart == SNAPSTART
    assert template["Globals"]["Function"]["Runtime"] in ("python3.12", "python3.13")
    for name in snapstart:
        props = functions[name]
        assert props["SnapStart"] == {"ApplyOn": "PublishedVersions"}
        assert props["Handler"] == "app.handler" and props["AutoPublishAlias"] == "live"
        # A new layer (the code is there) must publish a new version, or the alias would keep the old code.
        assert props["AutoPublishAliasAllProperties"] is True
        # What SnapStart does not support.
        assert not {"ProvisionedConcurrencyConfig", "FileSystemConfigs"} & set(props)
        assert int(props.get("EphemeralStorage", {}).get("Size", 512)) <= 512
    assert template["Resources"]["ChatCoreLayer"]["Properties"]["PublishLambdaVersion"] is True
    assert functions["ChatFunction"]["Handler"] == "run.sh" and "SnapStart" not in functions["ChatFunction"]

    from tests.iam.roles import expand

    expanded = expand({})["Resources"]
    aliases = {
        r["Properties"]["FunctionName"]["Ref"]: k for k, r in expanded.items() if r["Type"] == "AWS::Lambda::Alias"
    }
    assert set(aliases) == SNAPSTART
    for name, resource in expanded.items():
        if resource["Type"] == "AWS::Lambda::Url":
            target = resource["Properties"]["TargetFunctionArn"]["Ref"]
            function = name.removesuffix("Url")
            assert target == (aliases[function] if function in SNAPSTART else function), name
    machine = expanded["ToolOperationStateMachine"]["Properties"]
    assert {v["Ref"] for v in machine["DefinitionSubstitutions"].values()} == {
        aliases["ToolWorkerFunction"],
        aliases["ContinuationFunction"],
    }
    invoke = [
        statement
        for policy in expanded["ToolOperationStateMachineRole"]["Properties"]["Policies"]
        for statement in policy["PolicyDocument"]["Statement"]
        if "lambda:InvokeFunction" in str(statement["Action"])
    ]
    assert [sorted(r["Ref"] for r in statement["Resource"]) for statement in invoke] == [
        sorted([aliases["ToolWorkerFunction"], aliases["ContinuationFunction"]])
    ]


# Settings read from the environment that have a safe default in chatcore.config (documented in README);
# everything else the code reads must be set by the template.
DEFAULTED = {
    "CACHE_TTL_SECONDS",
    "REDIS_TIMEOUT_SECONDS",
    "REDIS_RETRY_AFTER_SECONDS",
    "REDIS_TLS_CA_FILE",
    "MAX_TITLE_CHARS",
    "MAX_METADATA_BYTES",
    "MAX_MESSAGE_CHARS",
    "MAX_BODY_BYTES",
    "USER_CONTEXT_MAX_CHARS",
    "CORS_ALLOW_ORIGINS",
    "LLM_API_KEY",
    "LLM_TIMEOUT_SECONDS",
    "LLM_FIRST_TOKEN_SECONDS",
    "FUNCTION_TIMEOUT_SECONDS",  # 0 = unknown; the functions that call the model set it (test below)
    "LLM_MAX_RETRIES",
    "LLM_CONTEXT_TOKENS",
    "TURN_LEASE_SECONDS",
    "TURN_LEASE_RENEW_SECONDS",
    "ANSWER_WRITE_RETRY_SECONDS",
    "REPLAY_TTL_SECONDS",
    "HEARTBEAT_SECONDS",
    "TITLE_TIMEOUT_SECONDS",
    "CALLBACK_URL",
    "OPERATION_GUARD_SECONDS",
    "MAX_OPERATION_DEPTH",
    "RESUME_IDLE_SECONDS",
    # Local runs and tests only: a deployment passes secrets as *_SECRET_ARN (test_no_secret_travels_...).
    "JWT_SECRET",
    "CALLBACK_SECRET",
    "LLM_API_KEY",
    # Unset = that function does not read the secret (test_functions_get_the_settings_they_need says who does).
    "JWT_SECRET_ARN",
    "CALLBACK_SECRET_ARN",
    "LLM_API_KEY_SECRET_ARN",
    "REDIS_URL",
    "REDIS_URL_SECRET_ARN",
}


def test_every_environment_variable_the_code_reads_is_set_or_defaulted():
    read = SETTING_VARS
    assert len(read) > 30
    template = load_template()
    set_globally = set(template["Globals"]["Function"]["Environment"]["Variables"])
    readme = (ROOT / "README.md").read_text()
    for logical_id, props in _functions().items():
        set_here = set_globally | set(props.get("Environment", {}).get("Variables", {}))
        missing = read - set_here - DEFAULTED
        assert not missing, f"{logical_id} does not set {sorted(missing)}"
    for key in read:
        assert f"`{key}`" in readme, f"{key} is not documented in README"
    assert "CALLBACK_URL" in _functions()["ToolWorkerFunction"]["Environment"]["Variables"]


def test_template_parameter_bounds_and_cross_checks():
    from chatcore.config import ConfigError, Settings

    params = load_template()["Parameters"]
    assert params["ToolTimeoutSeconds"]["MaxValue"] == 900
    assert 30 in params["LogRetentionDays"]["AllowedValues"] and 7 in params["LogRetentionDays"]["AllowedValues"]
    assert params["MaxConcurrency"]["MinValue"] == 0
    # CloudFormation cannot compare two parameters: heartbeat < timeout is checked when a function starts.
    defaults = {
        "CALLBACK_HEARTBEAT_SECONDS": str(params["CallbackHeartbeatSeconds"]["Default"]),
        "CALLBACK_TIMEOUT_SECONDS": str(params["CallbackTimeoutSeconds"]["Default"]),
        "TOOL_TIMEOUT_SECONDS": str(params["ToolTimeoutSeconds"]["Default"]),
    }
    Settings.from_env(defaults)
    with pytest.raises(ConfigError, match="CALLBACK_HEARTBEAT_SECONDS"):
        Settings.from_env({**defaults, "CALLBACK_HEARTBEAT_SECONDS": "86400"})
    with pytest.raises(ConfigError, match="TOOL_TIMEOUT_SECONDS"):
        Settings.from_env({**defaults, "TOOL_TIMEOUT_SECONDS": "901"})


def test_public_functions_can_be_capped_and_only_cache_users_sit_in_the_vpc():
    functions = _functions()
    capped = {name for name, props in functions.items() if "ReservedConcurrentExecutions" in props}
    assert capped == {"SessionsFunction", "ChatFunction", "CallbackFunction"}
    in_vpc = {name for name, props in functions.items() if "VpcConfig" in props}
    assert in_vpc == {name for name, props in functions.items() if "REDIS_URL" in props["Environment"]["Variables"]}
    assert "CallbackFunction" not in in_vpc
    assert "VpcConfig" not in load_template()["Globals"]["Function"]


def test_every_test_file_is_collected():
    """pytest silently skips folders named like build/, dist/ or venv/ (norecursedirs): a test file there would
    never run in CI (tests/build once did). Every tests/**/test_*.py must appear in the default collection."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    collected = {line.split("::")[0] for line in result.stdout.splitlines() if "::" in line}
    files = {str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py") if "node_modules" not in p.parts}
    assert files and files <= collected, sorted(files - collected)


def test_functions_that_call_the_model_know_their_timeout():
    """A turn starts no model retry it could not finish before Lambda stops the function (issue 12 item 3): the
    functions that run turns say their own timeout, and it is the one the template gives them."""
    functions = _functions()
    for logical_id in ("ChatFunction", "ChatBufferedFunction", "ContinuationFunction"):
        props = functions[logical_id]
        told = props["Environment"]["Variables"]["FUNCTION_TIMEOUT_SECONDS"]
        assert int(told) == int(props["Timeout"]), logical_id
