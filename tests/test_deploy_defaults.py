"""Deploy by defaults, the only way we can here: the template's default parameters, evaluated like CloudFormation
would (Rules, Conditions, intrinsics), give each function its environment as Lambda would see it; the real handlers
then run against moto (secrets generated the way the template asks) with that environment alone.

What the defaults promise (README, "Deploying with every default"): the sessions API works, the chat answers a
JSON 503 naming the missing LLM key (the adapter's readiness path still answers), the callback API verifies
signatures with the generated secret, and the state machine's functions handle their sample events."""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import string
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from chatcore.config import reset_settings
from chatcore.runtime import default_engine
from chatcore.sessions import default_service
from chatcore.signing import signed_headers
from local.handlers import LambdaContext, load_handler_module
from tests.support.handlers import load_event
from tests.support.template_eval import Deployment, RuleRefused
from tests.support.tokens import auth_header

ROOT = Path(__file__).resolve().parent.parent
SETTING_VARS = set(
    re.findall(r'env(?:\.get\(|, )"([A-Z_]+)"', (ROOT / "layers/chatcore/chatcore/config.py").read_text())
)
CALLBACK_FUNCTION_URL = "https://cbcbcbcbcb.lambda-url.us-east-1.on.aws/"  # as AWS gives it: with the slash


def _generate(spec: dict[str, Any]) -> str:
    """A value like Secrets Manager's GenerateSecretString with the template's own options."""
    alphabet = string.ascii_letters + string.digits
    if not spec.get("ExcludePunctuation"):
        alphabet += "!#$%&()*+,-.:;<=>?@[]^_{|}~"
    return "".join(secrets.choice(alphabet) for _ in range(int(spec.get("PasswordLength", 32))))


def deploy(table_name: str, **parameters: str) -> tuple[Deployment, dict[str, str]]:
    """The stack for these parameters: Rules checked, the secrets it creates stored in moto."""
    deployment = Deployment(parameters=parameters, stack_name=f"chat-{uuid.uuid4().hex[:8]}")
    deployment.check_rules()
    resources = deployment.template["Resources"]
    store = boto3.client("secretsmanager")
    values: dict[str, str] = {}
    refs = {"ChatTable": table_name}
    for logical_id, resource in resources.items():
        if resource["Type"] != "AWS::SecretsManager::Secret":
            continue
        if "Condition" in resource and not deployment.condition(resource["Condition"]):
            continue
        props = deployment.resolve(resource["Properties"])
        value = props.get("SecretString") or _generate(props["GenerateSecretString"])
        name = f"{deployment.stack_name}-{logical_id}"
        refs[logical_id] = store.create_secret(Name=name, SecretString=value)["ARN"]
        values[logical_id] = value
    deployment.refs.update(refs)
    deployment.attributes["CallbackFunctionUrl.FunctionUrl"] = CALLBACK_FUNCTION_URL
    return deployment, values


class Function:
    """One function's handler module, loaded fresh under exactly the environment the template gives it."""

    def __init__(self, deployment: Deployment, logical_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
        self.logical_id = logical_id
        self.environment = deployment.environment(logical_id)
        for key in SETTING_VARS:
            monkeypatch.delenv(key, raising=False)
        for key, value in self.environment.items():
            monkeypatch.setenv(key, value)
        reset_settings()
        default_service.cache_clear()
        default_engine.cache_clear()
        load_handler_module.cache_clear()
        self.module = load_handler_module(Path(deployment.functions()[logical_id]["CodeUri"]).name)

    def invoke(self, event: dict[str, Any]) -> Any:
        context = LambdaContext(function_name=self.logical_id)
        return self.module.handler(event, context)


def _url_event(name: str, *, method: str | None = None, path: str | None = None, **changes: Any) -> dict[str, Any]:
    event = load_event(name)
    if method is not None:
        event["requestContext"]["http"]["method"] = method
    if path is not None:
        event["rawPath"] = event["requestContext"]["http"]["path"] = path
    headers = changes.pop("headers", None)
    if headers is not None:
        event["headers"] = {**event["headers"], **headers}
    event.update(changes)
    return event


@pytest.fixture
def fresh_loop() -> Iterator[None]:
    """One event loop for the Mangum handlers (as in a warm Lambda), closed with the clients on it."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield
    if default_engine.cache_info().currsize:
        loop.run_until_complete(default_engine().aclose())
    if default_service.cache_info().currsize:
        loop.run_until_complete(default_service().aclose())
    loop.close()
    asyncio.set_event_loop(None)
    reset_settings()
    default_service.cache_clear()
    default_engine.cache_clear()
    load_handler_module.cache_clear()


def test_default_parameters_pass_the_rules_and_others_are_refused():
    Deployment().check_rules()
    with pytest.raises(RuleRefused, match="JwtIssuer"):
        Deployment(parameters={"AuthMode": "jwks"}).check_rules()
    Deployment(parameters={"AuthMode": "jwks", "JwtIssuer": "https://issuer.example"}).check_rules()
    with pytest.raises(RuleRefused, match="SubnetIds"):
        Deployment(parameters={"VpcId": "vpc-1", "SubnetsHaveNat": "true"}).check_rules()
    with pytest.raises(RuleRefused, match="NAT"):
        Deployment(parameters={"VpcId": "vpc-1", "SubnetIds": "subnet-a,subnet-b"}).check_rules()
    with pytest.raises(RuleRefused, match="LogRetentionDays"):
        Deployment(parameters={"LogRetentionDays": "31"}).parameter("LogRetentionDays")


def test_outputs_have_no_trailing_slash():
    deployment = Deployment()
    for name in ("SessionsFunctionUrl", "ChatFunctionUrl", "CallbackFunctionUrl"):
        deployment.attributes[f"{name}.FunctionUrl"] = f"https://{name.lower()}.lambda-url.us-east-1.on.aws/"
    for output in ("SessionsUrl", "ChatUrl", "CallbackUrl"):
        url = deployment.output(output)
        assert re.fullmatch(r"https://[a-z]+\.lambda-url\.us-east-1\.on\.aws", url), url


def test_sessions_api_works_with_every_default(table_name: str, fresh_loop: None, monkeypatch: pytest.MonkeyPatch):
    deployment, values = deploy(table_name)
    sessions = Function(deployment, "SessionsFunction", monkeypatch)
    assert "JWT_SECRET" not in sessions.environment and sessions.environment["JWT_SECRET_ARN"]
    health = sessions.invoke(load_event("sessions-health"))
    assert health["statusCode"] == 200, health
    assert json.loads(health["body"])["cache"] == "disabled"  # no VPC, no RedisUrl: caching off by default
    token = auth_header("deployer", secret=values["JwtSigningSecret"])
    created = sessions.invoke(_url_event("sessions-create", headers=token))
    assert created["statusCode"] == 201, created["body"]
    sid = json.loads(created["body"])["id"]
    listed = sessions.invoke(_url_event("sessions-list", headers=token))
    assert [s["id"] for s in json.loads(listed["body"])["sessions"]] == [sid]
    forged = sessions.invoke(_url_event("sessions-list", headers=auth_header("deployer", secret="x" * 40)))
    assert forged["statusCode"] == 401


def test_chat_answers_503_naming_the_llm_key(table_name: str, fresh_loop: None, monkeypatch: pytest.MonkeyPatch):
    deployment, values = deploy(table_name)
    token = auth_header("deployer", secret=values["JwtSigningSecret"])
    buffered = Function(deployment, "ChatBufferedFunction", monkeypatch)
    for event in (load_event("chat-health"), _url_event("chat-send", headers=token)):
        response = buffered.invoke(event)
        assert response["statusCode"] == 503, response
        error = json.loads(response["body"])["error"]
        assert error["code"] == "misconfigured" and "LLM_API_KEY_SECRET_ARN" in error["message"]

    streaming = Function(deployment, "ChatFunction", monkeypatch)
    readiness = streaming.environment["AWS_LWA_READINESS_CHECK_PATH"]

    async def over_asgi() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=streaming.module.asgi_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://lambda") as client:
            return [
                await client.get(readiness),
                await client.get("/health"),
                await client.post("/chat", json={"id": "x"}, headers=token),
            ]

    ready, health, chat = asyncio.get_event_loop().run_until_complete(over_asgi())
    assert ready.status_code == 200  # the Web Adapter's readiness check completes
    assert health.status_code == 503 and "LLM_API_KEY_SECRET_ARN" in health.json()["error"]["message"]
    assert chat.status_code == 503 and chat.json()["error"]["code"] == "misconfigured"


def test_chat_works_once_the_llm_key_is_given(table_name: str, fresh_loop: None, monkeypatch: pytest.MonkeyPatch):
    key = boto3.client("secretsmanager").create_secret(Name=f"llm-{uuid.uuid4().hex[:6]}", SecretString="sk-test")
    deployment, values = deploy(table_name, LlmApiKeySecretArn=key["ARN"])
    chat = Function(deployment, "ChatBufferedFunction", monkeypatch)
    assert "LLM_API_KEY" not in chat.environment
    health = chat.invoke(load_event("chat-health"))
    assert health["statusCode"] == 200, health
    resume = chat.invoke(
        _url_event(
            "chat-resume", headers=auth_header("demo-user", secret=values["JwtSigningSecret"]), rawQueryString=""
        )
    )
    assert resume["statusCode"] == 404  # authenticated with the generated key; no such session for this user


def test_callback_verifies_with_the_generated_secret(
    table_name: str, fresh_loop: None, monkeypatch: pytest.MonkeyPatch
):
    deployment, values = deploy(table_name)
    callback = Function(deployment, "CallbackFunction", monkeypatch)
    assert callback.invoke(_url_event("sessions-health", path="/health"))["statusCode"] == 200
    path = f"/operations/op_{'c' * 40}/complete"
    body = b'{"output": 1}'
    # The path as an external service builds it from the CallbackUrl output, or from the Function URL's "/".
    for index, sent in enumerate((path, "/" + path)):
        payload = json.dumps({"output": index}).encode()
        signed = signed_headers(values["CallbackSigningSecret"], "POST", sent, payload)
        event = _url_event("callback-error-bad-signature", path=sent, headers=signed, body=payload.decode())
        response = callback.invoke(event)
        assert response["statusCode"] == 404, response  # authentic, routed, and no such operation
    bad = signed_headers("x" * 64, "POST", path, body)
    assert (
        callback.invoke(_url_event("callback-error-bad-signature", path=path, headers=bad, body=body.decode()))[
            "statusCode"
        ]
        == 401
    )


@pytest.mark.parametrize(
    ("function", "event", "expected"),
    [
        ("ToolWorkerFunction", "toolworker-register-callback", {"ok": False}),
        ("ToolWorkerFunction", "toolworker-run-tool", {"ok": False}),
        ("ContinuationFunction", "continuation-save", {"saved": False}),
        ("ContinuationFunction", "continuation-finish", {"status": "unknown"}),
    ],
)
def test_state_machine_functions_handle_their_sample_events(
    table_name: str, fresh_loop: None, monkeypatch: pytest.MonkeyPatch, function: str, event: str, expected: dict
):
    deployment, _ = deploy(table_name)
    step = Function(deployment, function, monkeypatch)
    result = step.invoke(load_event(event))
    assert expected.items() <= result.items(), result
    if function == "ToolWorkerFunction":
        from chatcore.config import get_settings

        assert get_settings().callback_url == CALLBACK_FUNCTION_URL.rstrip("/")


def test_no_function_environment_holds_a_secret_value(table_name: str):
    deployment, values = deploy(table_name, JwtSecret="j" * 40, CallbackSecret="c" * 40, RedisUrl="redis://:pw@h:6379")
    for logical_id in deployment.functions():
        environment = json.dumps(deployment.environment(logical_id))
        for value in (*values.values(), "redis://:pw@h:6379"):
            assert value not in environment, (logical_id, value)
    assert os.environ.get("JWT_SECRET") is None
