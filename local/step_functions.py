"""Step Functions on the laptop: moto runs the real ASL from ``statemachines/`` and its Lambda tasks are dispatched
in-process to the project's own handlers (moto's simple Lambda backend ``invoke`` is the seam).

A handler's exception becomes a Lambda function error named after the exception class, exactly what the state
machine's Retry/Catch match on in AWS. Invocations run one at a time, like one warm Lambda container.
"""

from __future__ import annotations

import io
import json
import threading
import traceback
import zipfile
from typing import Any

import boto3
from moto.awslambda_simple.models import LambdaSimpleBackend
from moto.core.config import default_user_config

from local.handlers import invoke
from local.template import ROOT, resource

# Template logical id -> functions/<dir>
TASK_FUNCTIONS = {"ToolWorkerFunction": "tool_worker", "ContinuationFunction": "continuation"}
ACCOUNT = "123456789012"
_LOCK = threading.Lock()


def alias_of(logical_id: str) -> str | None:
    """The alias the template publishes for a function (``AutoPublishAlias``), if any."""
    alias: str | None = resource(logical_id)["Properties"].get("AutoPublishAlias")
    return alias


def _target(function_name: str, qualifier: str | None) -> tuple[str, str | None]:
    """The function's name and qualifier, from a name, ``name:qualifier`` or a (qualified) ARN."""
    if function_name.startswith("arn:"):
        parts = function_name.split(":")
        return parts[6], parts[7] if len(parts) > 7 else qualifier
    name, _, suffix = function_name.partition(":")
    return name, suffix or qualifier


def _dispatch(
    backend: LambdaSimpleBackend,
    function_name: str,
    qualifier: str | None,
    body: Any,
    headers: Any,
    response_headers: dict[str, str],
) -> bytes:
    name, qualifier = _target(function_name, qualifier)
    function_dir = TASK_FUNCTIONS.get(name)
    # As in AWS, a qualifier must be one the function has: here the template's alias (its only published name).
    if function_dir is None or qualifier not in (None, "$LATEST", alias_of(name)):
        response_headers["x-amz-function-error"] = "Unhandled"
        missing = f"no local handler for {function_name}"
        return json.dumps({"errorType": "ResourceNotFound", "errorMessage": missing}).encode()
    event = json.loads(body or b"{}")
    with _LOCK:
        try:
            result = invoke(function_dir, event, name)
        except Exception as exc:
            response_headers["x-amz-function-error"] = "Unhandled"
            error = {
                "errorType": type(exc).__name__,
                "errorMessage": str(exc),
                "stackTrace": traceback.format_exception(exc)[-3:],
            }
            return json.dumps(error).encode()
    return json.dumps(result).encode()


def install() -> None:
    """Make the in-process moto execute state machines and route Lambda invokes to our handlers."""
    default_user_config["stepfunctions"] = {"execute_state_machine": True}
    default_user_config["lambda"] = {"use_docker": False}
    LambdaSimpleBackend.invoke = _dispatch  # type: ignore[method-assign,assignment]


def task_arn(substitution: dict[str, Any], arns: dict[str, str]) -> str:
    """The ARN a DefinitionSubstitution names: ``!GetAtt Fn.Arn`` or ``!Ref Fn.Alias`` (the alias's ARN, as SAM
    resolves it for a function with ``AutoPublishAlias``)."""
    if "Fn::GetAtt" in substitution:
        return arns[substitution["Fn::GetAtt"][0]]
    logical_id, _, attribute = substitution["Ref"].partition(".")
    alias = alias_of(logical_id)
    if attribute != "Alias" or alias is None:
        raise ValueError(f"unsupported substitution {substitution}")
    return f"{arns[logical_id]}:{alias}"


def deploy_state_machine(name: str = "ToolOperationStateMachine") -> str:
    """Create the task functions and the state machine (template's DefinitionUri + DefinitionSubstitutions)."""
    install()
    iam, lam, sfn = boto3.client("iam"), boto3.client("lambda"), boto3.client("stepfunctions")
    try:
        role = iam.get_role(RoleName="local-chat-backend")["Role"]["Arn"]
    except iam.exceptions.NoSuchEntityException:
        role = iam.create_role(RoleName="local-chat-backend", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as archive:
        archive.writestr("app.py", "def handler(event, context):\n    return event\n")
    arns: dict[str, str] = {}
    for logical_id in TASK_FUNCTIONS:
        try:
            arns[logical_id] = lam.get_function(FunctionName=logical_id)["Configuration"]["FunctionArn"]
        except lam.exceptions.ResourceNotFoundException:
            arns[logical_id] = lam.create_function(
                FunctionName=logical_id,
                Runtime="python3.12",
                Role=role,
                Handler="app.handler",
                Code={"ZipFile": code.getvalue()},
            )["FunctionArn"]
    props = resource(name)["Properties"]
    definition = (ROOT / props["DefinitionUri"]).read_text()
    for key, value in props["DefinitionSubstitutions"].items():
        definition = definition.replace("${" + key + "}", task_arn(value, arns))
    existing = [m for m in sfn.list_state_machines()["stateMachines"] if m["name"] == name]
    if existing:
        arn: str = existing[0]["stateMachineArn"]
        sfn.update_state_machine(stateMachineArn=arn, definition=definition)
        return arn
    arn = sfn.create_state_machine(name=name, definition=definition, roleArn=role)["stateMachineArn"]
    return arn
