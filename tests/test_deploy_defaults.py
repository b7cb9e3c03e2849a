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
from collections.abc import Iterator

import httpx
import pytest

from chatcore.signing import signed_headers
from tests.support.aws_resources import llm_key_secret_arn
from tests.support.deploy import CALLBACK_FUNCTION_URL, Function, deploy, handler_loop, url_event
from tests.support.handlers import load_event
from tests.support.template_eval import Deployment, RuleRefused
from tests.support.tokens import auth_header


@pytest.fixture
def fresh_loop() -> Iterator[None]:
    with handler_loop():
        yield


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


def test_the_state_machine_invokes_the_aliases_of_its_functions():
    deployment = Deployment()
    for name in ("ToolWorkerFunction", "ContinuationFunction"):
        deployment.attributes[f"{name}.Arn"] = f"arn:aws:lambda:us-east-1:123456789012:function:chat-test-{name}"
    machine = deployment.template["Resources"]["ToolOperationStateMachine"]["Properties"]
    assert deployment.resolve(machine["DefinitionSubstitutions"]) == {
        "ToolWorkerFunctionArn": "arn:aws:lambda:us-east-1:123456789012:function:chat-test-ToolWorkerFunction:live",
        "ContinuationFunctionArn": "arn:aws:lambda:us-east-1:123456789012:function:chat-test-ContinuationFunction:live",
    }
    with pytest.raises(KeyError, match="publishes no alias"):
        deployment.resolve({"Ref": "ChatFunction.Alias"})


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
    created = sessions.invoke(url_event("sessions-create", headers=token))
    assert created["statusCode"] == 201, created["body"]
    sid = json.loads(created["body"])["id"]
    listed = sessions.invoke(url_event("sessions-list", headers=token))
    assert [s["id"] for s in json.loads(listed["body"])["sessions"]] == [sid]
    forged = sessions.invoke(url_event("sessions-list", headers=auth_header("deployer", secret="x" * 40)))
    assert forged["statusCode"] == 401


def test_chat_answers_503_naming_the_llm_key(table_name: str, fresh_loop: None, monkeypatch: pytest.MonkeyPatch):
    deployment, values = deploy(table_name)
    token = auth_header("deployer", secret=values["JwtSigningSecret"])
    buffered = Function(deployment, "ChatBufferedFunction", monkeypatch)
    for event in (load_event("chat-health"), url_event("chat-send", headers=token)):
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
    deployment, values = deploy(table_name, LlmApiKeySecretArn=llm_key_secret_arn())
    chat = Function(deployment, "ChatBufferedFunction", monkeypatch)
    assert "LLM_API_KEY" not in chat.environment
    health = chat.invoke(load_event("chat-health"))
    assert health["statusCode"] == 200, health
    resume = chat.invoke(
        url_event("chat-resume", headers=auth_header("demo-user", secret=values["JwtSigningSecret"]), rawQueryString="")
    )
    assert resume["statusCode"] == 404  # authenticated with the generated key; no such session for this user


def test_callback_verifies_with_the_generated_secret(
    table_name: str, fresh_loop: None, monkeypatch: pytest.MonkeyPatch
):
    deployment, values = deploy(table_name)
    callback = Function(deployment, "CallbackFunction", monkeypatch)
    assert callback.invoke(url_event("sessions-health", path="/health"))["statusCode"] == 200
    path = f"/operations/op_{'c' * 40}/complete"
    body = b'{"output": 1}'
    # The path as an external service builds it from the CallbackUrl output, or from the Function URL's "/".
    for index, sent in enumerate((path, "/" + path)):
        payload = json.dumps({"output": index}).encode()
        signed = signed_headers(values["CallbackSigningSecret"], "POST", sent, payload)
        event = url_event("callback-error-bad-signature", path=sent, headers=signed, body=payload.decode())
        response = callback.invoke(event)
        assert response["statusCode"] == 404, response  # authentic, routed, and no such operation
    bad = signed_headers("x" * 64, "POST", path, body)
    assert (
        callback.invoke(url_event("callback-error-bad-signature", path=path, headers=bad, body=body.decode()))[
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
        from chatcore.container import default_container

        assert default_container().settings.callback_url == CALLBACK_FUNCTION_URL.rstrip("/")


def test_no_function_environment_holds_a_secret_value(table_name: str):
    deployment, values = deploy(table_name, JwtSecret="j" * 40, CallbackSecret="c" * 40, RedisUrl="redis://:pw@h:6379")
    for logical_id in deployment.functions():
        environment = json.dumps(deployment.environment(logical_id))
        for value in (*values.values(), "redis://:pw@h:6379"):
            assert value not in environment, (logical_id, value)
    assert os.environ.get("JWT_SECRET") is None
