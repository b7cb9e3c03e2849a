"""A stack "deployed" from template.yaml into the test process: the template evaluated for some parameters
(Rules, Conditions, intrinsics), the secrets it creates stored in moto, and each function's real handler loaded
fresh under exactly the environment the template gives it, as a cold Lambda container would."""

from __future__ import annotations

import asyncio
import re
import secrets
import string
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import pytest

from chatcore.container import built_default_container, set_default_container
from local.handlers import LambdaContext, load_handler_module
from tests.support.handlers import load_event
from tests.support.template_eval import Deployment

ROOT = Path(__file__).resolve().parents[2]
# The environment variables chatcore.config reads (its only reader of the environment).
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
        set_default_container(None)  # a cold container: settings and secrets read from this environment
        load_handler_module.cache_clear()
        self.module = load_handler_module(Path(deployment.functions()[logical_id]["CodeUri"]).name)

    def invoke(self, event: dict[str, Any]) -> Any:
        context = LambdaContext(function_name=self.logical_id)
        return self.module.handler(event, context)


def url_event(name: str, *, method: str | None = None, path: str | None = None, **changes: Any) -> dict[str, Any]:
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


@contextmanager
def handler_loop() -> Iterator[None]:
    """One event loop for the Mangum handlers (as in a warm Lambda), closed with the clients on it."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        yield
    finally:
        _close(loop)


def _close(loop: asyncio.AbstractEventLoop) -> None:
    container = built_default_container()
    if container is not None:
        loop.run_until_complete(container.aclose())
    loop.close()
    asyncio.set_event_loop(None)
    set_default_container(None)
    load_handler_module.cache_clear()
