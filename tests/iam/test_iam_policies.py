"""What `sam deploy` creates is what the tests run: every AWS call a function's code makes is allowed by that
function's IAM role as template.yaml defines it.

* ``tests/iam/recording.py`` records every AWS call of the test session with the function it runs as.
* ``tests/iam/roles.py`` expands template.yaml with the SAM translator and resolves each role's policies.
* ``tests/iam/evaluate.mjs`` evaluates the calls with a real IAM policy evaluator (@cloud-copilot/iam-simulate).

The scenarios below drive every function through the local stack (the same apps, handlers and state machine as
in AWS) so the checks never pass on an empty recording; the calls every other test of the session made as a
function are checked too (this module runs last). Whatever a scenario does as the test itself (creating the table,
seeding, polling) runs inside ``RECORDER.harness()``; any other call that no function made fails the test.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
import redis

import local.offline_llm as offline_llm
import local.step_functions as step_functions
from chatcore.container import reset_default_container
from chatcore.signing import signed_headers
from local.template import create_table_kwargs
from tests.conftest import ChatStack, start_chat_stack, stop_chat_stack
from tests.iam.recording import RECORDER, UNKNOWN, Call
from tests.iam.roles import ACCOUNT, ALLOWED_MANAGED_POLICIES, Deployment
from tests.integration.test_chat_turns import history, ui_body
from tests.integration.test_operations import _resume_until_continuation, _turn, _wait
from tests.support.aws_resources import llm_key_secret_arn
from tests.support.deploy import Function, deploy, handler_loop
from tests.support.handlers import load_event
from tests.support.redis_server import RedisServer

HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.iam_check

PROMPT_PARAMETER = "/chat-test/system-prompt"

# Every function of the template whose code calls AWS, and the state machine (it invokes the task functions).
PRINCIPALS = [
    "SessionsFunction",
    "ChatFunction",
    "ToolWorkerFunction",
    "ContinuationFunction",
    "CallbackFunction",
    "ToolOperationStateMachine",
]
# Functions that run the same code as another with the same role: checked with that function's calls.
SAME_CODE = {"ChatBufferedFunction": "ChatFunction"}


# ------------------------------------------------------------------------------------------------ scenarios
@dataclass
class Scenario:
    name: str
    error: str | None = None
    calls: list[Call] = field(default_factory=list)


def _harness(reason: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    with RECORDER.harness(reason):
        return fn(*args, **kwargs)


def _operation(chat: ChatStack, operation_id: str) -> Any:
    operations = chat.stack.engine.deps.operations
    return _harness("poll the operation", chat.server.call, operations.get(operation_id))


def _signed_post(client: Any, chat: ChatStack, path: str, body: dict[str, Any]) -> Any:
    raw = json.dumps(body).encode()
    headers = {"content-type": "application/json", **signed_headers(chat.settings.callback_secret, "POST", path, raw)}
    return client.post(path, content=raw, headers=headers)


def sessions_crud(chat: ChatStack) -> None:
    with chat.client() as client:
        created = client.post("/sessions", json={"title": "iam", "metadata": {"k": "v"}})
        assert created.status_code == 201, created.text
        sid = created.json()["id"]
        assert client.get(f"/sessions/{sid}").status_code == 200
        assert client.get("/sessions?limit=5").status_code == 200
        for filters in ("status=archived", "chat_type=chat", "chat_type=chat&status=active"):  # the filtered indexes
            assert client.get(f"/sessions?limit=5&{filters}").status_code == 200
        assert client.patch(f"/sessions/{sid}", json={"status": "archived"}).status_code == 200
        assert client.patch(f"/sessions/{sid}", json={"title": "renamed"}).status_code == 200
        assert client.get("/users/me/context").status_code == 200
        context = client.put("/users/me/context", json={"context": "Audits IAM roles.", "version": 0})
        assert context.status_code == 200, context.text
        answer = _turn(client, sid, "Hello there").of_type("start")[0]["messageId"]
        feedback = f"/sessions/{sid}/messages/{answer}/feedback"
        assert client.put(feedback, json={"rating": "up", "comment": "clear"}).status_code == 200
        assert client.get(f"/sessions/{sid}/messages").status_code == 200
        assert client.delete(feedback).status_code == 204
        assert client.put(feedback, json={"rating": "down"}).status_code == 200  # swept with the session below
        assert client.delete(f"/sessions/{sid}").status_code == 204
        others = [client.post("/sessions", json={}).json()["id"] for _ in range(2)]
        deleted = client.post("/sessions/batch-delete", json={"session_ids": others})
        assert deleted.status_code == 200, deleted.text


def chat_turns(chat: ChatStack) -> None:
    chat.llm.token_delay = 0.02
    with chat.client() as client:
        sid = str(uuid.uuid4())
        body = ui_body(sid, "Remember the fact about otters.")
        assert client.post("/chat", json=body).status_code == 200
        # The same user message again (its client message id is stored): it attaches to the turn it started (409
        # without the cache: there is no replay to attach to).
        assert client.post("/chat", json=body).status_code == (200 if chat.settings.redis_url else 409)
        assert client.get(f"/chat/{sid}/stream").status_code in (200, 204)
        # A sync builtin that reads the user's session list (the ByUser index).
        _turn(client, sid, '[[tool:search_sessions {"query": "otters"}]]')
        result: dict[str, int] = {}

        def long_turn() -> None:
            with chat.client() as other:
                result["status"] = other.post(f"/sessions/{sid}/stream", json={"message": "[[long:400]]"}).status_code

        thread = threading.Thread(target=long_turn)
        thread.start()
        time.sleep(1.0)
        assert client.post(f"/chat/{sid}/stop").status_code in (202, 204)
        thread.join(timeout=30)
        assert result["status"] == 200
        assert client.post(f"/chat/{sid}/stop").status_code == 204  # nothing running: the table says so


def long_running_tool(chat: ChatStack) -> None:
    """A long-running tool (ToolWorkerFunction) whose continuation (ContinuationFunction) searches the sessions
    and starts a second long-running tool (see ``_continuation_plan``)."""
    chat.llm.token_delay = 0.01
    with chat.client() as client:
        sid = client.post("/sessions", json={"title": "ops"}).json()["id"]
        _turn(client, sid, "Remember fact number 1.")
        first = _turn(client, sid, "[[tool:summarize_conversation]]")
        operation_id = first.of_type("data-operation")[0]["id"]
        if chat.settings.redis_url:
            _resume_until_continuation(client, sid)
        _wait(lambda: _operation(chat, operation_id).status == "done")

        def tools() -> list[str]:
            return [m["name"] for m in history(chat, client, sid) if m["role"] == "tool" and m["status"] == "complete"]

        _wait(lambda: tools() == ["summarize_conversation", "search_sessions", "summarize_conversation"])
        _wait(lambda: history(chat, client, sid)[-1]["role"] == "assistant")


def callback_tools(chat: ChatStack) -> None:
    """Callback tools: completed, failed and heartbeating through the CallbackFunction; one that cannot start."""
    with chat.client() as client:
        for outcome in ("complete", "fail"):
            sid = client.post("/sessions", json={}).json()["id"]
            first = _turn(client, sid, f'[[tool:wait_for_external_job {{"description": "{outcome} it"}}]]')
            operation_id = first.of_type("data-operation")[0]["id"]
            _wait(lambda operation_id=operation_id: _operation(chat, operation_id).status == "waiting")
            beat = _signed_post(client, chat, f"/operations/{operation_id}/heartbeat", {})
            assert beat.status_code in (200, 202, 204), beat.text
            body = {"output": {"ok": 1}} if outcome == "complete" else {"error": "render failed"}
            done = _signed_post(client, chat, f"/operations/{operation_id}/{outcome}", body)
            assert done.status_code == 202, done.text
            _wait(lambda operation_id=operation_id: _operation(chat, operation_id).status == "done")
        # The worker's argument validation fails: the job never starts and the wait is failed at once.
        sid = client.post("/sessions", json={}).json()["id"]
        first = _turn(client, sid, '[[tool:wait_for_external_job {"description": "' + "x" * 600 + '"}]]')
        operation_id = first.of_type("data-operation")[0]["id"]
        _wait(lambda: _operation(chat, operation_id).status == "done")


def delete_mid_operation(chat: ChatStack) -> None:
    """Deleting a session cancels its running operation: the SessionsFunction stops the execution."""
    with chat.client() as client:
        sid = client.post("/sessions", json={}).json()["id"]
        first = _turn(client, sid, '[[tool:wait_for_external_job {"description": "slow"}]]')
        operation_id = first.of_type("data-operation")[0]["id"]
        _wait(lambda: _operation(chat, operation_id).status == "waiting")
        assert client.delete(f"/sessions/{sid}").status_code == 204
        assert _operation(chat, operation_id).status == "cancelled"
        sfn = boto3.client("stepfunctions")
        arn = chat.stack.engine.deps.operations._execution_arn(operation_id)
        _wait(lambda: _harness("poll", sfn.describe_execution, executionArn=arn)["status"] != "RUNNING", timeout=20)


def cold_starts(chat: ChatStack) -> None:
    """Each HTTP function started cold under the template's own environment: it reads the secrets it is given
    (as ARNs) at init, with its own role. The local stack's apps are built from plain settings at its start."""
    parameters: dict[str, str] = {}
    if chat.settings.llm_api_key_secret_arn:
        parameters = {
            "LlmApiKeySecretArn": chat.settings.llm_api_key_secret_arn,
            "SystemPromptParameter": chat.settings.system_prompt_parameter,
        }
    with RECORDER.harness("create the stack's secrets"):
        deployment, _ = deploy(chat.settings.table_name, **parameters)
    with pytest.MonkeyPatch.context() as patch, handler_loop():
        for function, event in (
            ("SessionsFunction", "sessions-health"),
            ("ChatBufferedFunction", "chat-health"),
            ("CallbackFunction", "chat-health"),
        ):
            response = Function(deployment, function, patch).invoke(load_event(event))
            assert response["statusCode"] in (200, 503), response
        streaming = Function(deployment, "ChatFunction", patch)

        async def health() -> int:
            transport = httpx.ASGITransport(app=streaming.module.asgi_app)
            async with httpx.AsyncClient(transport=transport, base_url="http://lambda") as client:
                return (await client.get("/health")).status_code

        assert asyncio.get_event_loop().run_until_complete(health()) in (200, 503)
    chat.stack.install_default_container()  # back to the stack's settings for the in-process tasks


def _continuation_plan(original: Callable[..., Any]) -> Callable[..., Any]:
    """The offline model, except that the continuation of a summary first searches the sessions (a sync builtin run
    by the ContinuationFunction), then asks for a second summary (a long-running tool the continuation starts)."""

    def plan(body: dict[str, Any], directives: Any) -> Any:
        messages = body["messages"]
        calls = [c["function"]["name"] for m in messages for c in m.get("tool_calls") or []]
        if messages[-1].get("role") == "tool" and "summarize_conversation" in calls:
            follow = "search_sessions" if "search_sessions" not in calls else "summarize_conversation"
            if calls.count("summarize_conversation") < 2 and follow in offline_llm._tool_names(body):
                arguments = '{"query": "fact"}' if follow == "search_sessions" else "{}"
                call = offline_llm.ToolCall(f"call_{follow}_{len(messages)}", follow, arguments)
                return offline_llm.Reply(None, (call,))
        return original(body, directives)

    return plan


# Template parameter values of each variant the scenarios run in (+ LlmApiKeySecretArn: the test's secret).
VARIANTS: dict[str, dict[str, str]] = {
    "defaults": {},
    "optional-parameters": {"SystemPromptParameter": PROMPT_PARAMETER},
}

SCENARIOS: list[Callable[[ChatStack], None]] = [
    cold_starts,  # first: no background execution of another scenario is running while it swaps the environment
    sessions_crud,
    chat_turns,
    long_running_tool,
    callback_tools,
    delete_mid_operation,
]


def _new_table() -> str:
    name = f"chat-iam-{uuid.uuid4().hex[:8]}"
    boto3.client("dynamodb").create_table(**create_table_kwargs(name))
    return name


def _optional_resources() -> dict[str, Any]:
    """The LLM key secret and the system prompt parameter (the template's optional parameters), in moto."""
    arn = llm_key_secret_arn()
    boto3.client("ssm").put_parameter(Name=PROMPT_PARAMETER, Value="You are terse.", Type="String", Overwrite=True)
    return {"llm_api_key": "", "llm_api_key_secret_arn": arn, "system_prompt_parameter": PROMPT_PARAMETER}


@dataclass
class Recording:
    scenarios: list[Scenario]
    secret_arn: str

    @property
    def calls(self) -> list[Call]:
        return [c for s in self.scenarios for c in s.calls]


@pytest.fixture(scope="module")
def recording(redis_server: RedisServer) -> Iterator[Recording]:
    patch = pytest.MonkeyPatch()
    patch.setattr(offline_llm, "plan_reply", _continuation_plan(offline_llm.plan_reply))
    # In AWS each task runs in its own function's container and reads its own settings and secrets; in this one
    # process, start every state-machine task from cold so each reads what its function would.
    patch.setattr(step_functions, "invoke", _cold(step_functions.invoke))
    scenarios: list[Scenario] = []
    tables: list[str] = []
    secret_arn = ""
    try:
        # The defaults with the cache; then the optional parameters set and no cache (every read hits DynamoDB).
        for variant in VARIANTS:
            with RECORDER.harness("start the stack"):
                _flush(redis_server.url)
                overrides = _optional_resources() if variant != "defaults" else {}
                secret_arn = overrides.get("llm_api_key_secret_arn", secret_arn)
                redis_url = redis_server.url if variant == "defaults" else ""
                tables.append(_new_table())
                chat = start_chat_stack(
                    tables[-1], redis_url, callback_heartbeat_seconds=2, callback_timeout_seconds=60, **overrides
                )
            try:
                for scenario in SCENARIOS:
                    scenarios.append(_run(f"{variant}/{scenario.__name__}", scenario, chat))
            finally:
                with RECORDER.harness("stop the stack"):
                    stop_chat_stack(chat)
        yield Recording(scenarios, secret_arn)
    finally:
        patch.undo()
        with RECORDER.harness("clean up"):
            for table in tables:
                boto3.client("dynamodb").delete_table(TableName=table)


def _cold(invoke: Callable[..., Any]) -> Callable[..., Any]:
    def cold_invoke(*args: Any, **kwargs: Any) -> Any:
        reset_default_container()
        return invoke(*args, **kwargs)

    return cold_invoke


def _flush(url: str) -> None:
    client = redis.Redis.from_url(url)
    client.flushall()
    client.close()


def _run(name: str, scenario: Callable[[ChatStack], None], chat: ChatStack) -> Scenario:
    mark = RECORDER.mark()
    error = None
    test, RECORDER.current_test = RECORDER.current_test, f"{__name__} scenario {name}"
    try:
        scenario(chat)
    except Exception:
        error = traceback.format_exc()
    finally:
        RECORDER.current_test = test
    return Scenario(name, error, RECORDER.since(mark))


# ------------------------------------------------------------------------------------------------ evaluation


@dataclass(frozen=True)
class Check:
    principal: str
    variant: str
    action: str
    resource: str  # as the deployed stack has it
    recorded: str  # as recorded


@dataclass
class Evaluation:
    checks: dict[Check, str]  # -> Allowed | ImplicitlyDenied | ExplicitlyDenied | Error: ...
    deployments: dict[str, Deployment]
    examples: dict[tuple[str, str, str], Call]


def _deployments(secret_arn: str) -> dict[str, Deployment]:
    variants = {name: dict(values) for name, values in VARIANTS.items()}
    variants["optional-parameters"]["LlmApiKeySecretArn"] = secret_arn
    return {name: Deployment(values) for name, values in variants.items()}


def _only_with_parameter(resource: str, deployments: dict[str, Deployment]) -> set[str]:
    """Variants a resource exists in when a parameter names it (the LLM key secret, the prompt parameter)."""
    given = {
        name
        for name, d in deployments.items()
        for value in d.parameters.values()
        if value and (resource == value or resource.endswith(f":parameter{value}"))
    }
    return given or set(deployments)


def _checks(calls: list[Call], deployments: dict[str, Deployment]) -> tuple[set[Check], dict[Any, Call]]:
    checks: set[Check] = set()
    examples: dict[Any, Call] = {}
    for call in calls:
        if call.principal is None:
            continue
        principals = [call.principal, *(f for f, same in SAME_CODE.items() if same == call.principal)]
        for action, recorded in call.authorizations:
            for variant in _only_with_parameter(recorded, deployments):
                resource = recorded if recorded == "*" else deployments[variant].canonical(recorded)
                for principal in principals:
                    checks.add(Check(principal, variant, action, resource, recorded))
                examples.setdefault((call.principal, action, resource), call)
    return checks, examples


def evaluate(checks: set[Check], deployments: dict[str, Deployment]) -> dict[Check, str]:
    """One node process for all checks (@cloud-copilot/iam-simulate)."""
    node = shutil.which("node")
    assert node, "the IAM tests need Node.js 20+"
    assert (HERE / "node_modules" / "@cloud-copilot" / "iam-simulate").is_dir(), "run: npm ci --prefix tests/iam"
    ordered = sorted(checks, key=lambda c: (c.principal, c.variant, c.action, c.resource))
    roles = {}
    payload = []
    for index, check in enumerate(ordered):
        if (check.variant, check.principal) not in roles:
            roles[check.variant, check.principal] = deployments[check.variant].role_of(check.principal)
        role = roles[check.variant, check.principal]
        payload.append(
            {
                "id": str(index),
                "principal": role.arn,
                "policies": role.policies,
                "action": check.action,
                "resource": check.resource,
                "accountId": ACCOUNT,
            }
        )
    if not payload:
        return {}
    result = subprocess.run(
        [node, str(HERE / "evaluate.mjs")],
        input=json.dumps({"checks": payload}),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    answers = {r["id"]: r for r in json.loads(result.stdout.strip().splitlines()[-1])["results"]}
    return {
        check: answers[str(i)]["result"] + (f": {answers[str(i)]['error']}" if answers[str(i)].get("error") else "")
        for i, check in enumerate(ordered)
    }


@pytest.fixture(scope="module")
def evaluation(recording: Recording) -> Evaluation:
    deployments = _deployments(recording.secret_arn)
    # The scenarios' calls and those of every other test of this session that ran as a function.
    calls = [c for c in RECORDER.since(0) if c.principal is not None]
    checks, examples = _checks(calls, deployments)
    return Evaluation(evaluate(checks, deployments), deployments, examples)


# ------------------------------------------------------------------------------------------------ tests
@pytest.mark.parametrize("name", [f"{v}/{s.__name__}" for v in VARIANTS for s in SCENARIOS])
def test_scenario_ran(recording: Recording, name: str):
    scenario = next(s for s in recording.scenarios if s.name == name)
    assert scenario.error is None, scenario.error


def test_every_call_of_the_scenarios_is_made_as_a_function(recording: Recording):
    unattributed = [c.describe() for c in recording.calls if c.principal is None and c.harness is None]
    assert not unattributed, "AWS calls made as no function of template.yaml:\n" + "\n".join(unattributed)


def test_every_call_has_an_authorization_rule():
    unknown = sorted(
        {c.describe() for c in RECORDER.since(0) if c.principal and any(r == UNKNOWN for _, r in c.authorizations)}
    )
    assert not unknown, "tests/iam/recording.py has no rule for the resources of:\n" + "\n".join(unknown)


@pytest.mark.parametrize("principal", PRINCIPALS)
def test_calls_were_recorded(recording: Recording, principal: str):
    """The checks below cannot pass on an empty recording."""
    assert any(c.principal == principal for c in recording.calls), f"no AWS call recorded for {principal}"


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_principal_of_the_template_is_covered(evaluation: Evaluation, variant: str):
    deployment = evaluation.deployments[variant]
    assert set(deployment.principals()) == set(PRINCIPALS) | set(SAME_CODE)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_same_code_functions_have_the_same_policies(evaluation: Evaluation, variant: str):
    deployment = evaluation.deployments[variant]
    for function, same in SAME_CODE.items():
        statements = [p["policy"] for p in deployment.role_of(function).policies]
        assert statements == [p["policy"] for p in deployment.role_of(same).policies], function


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_roles_have_no_other_managed_policies(evaluation: Evaluation, variant: str):
    deployment = evaluation.deployments[variant]
    for principal in deployment.principals():
        extra = set(deployment.role_of(principal).managed) - ALLOWED_MANAGED_POLICIES
        assert not extra, f"{principal}: managed policies the IAM test cannot see into: {extra}"


@pytest.mark.parametrize("principal", [*PRINCIPALS, *SAME_CODE])
def test_role_allows_every_recorded_call(evaluation: Evaluation, principal: str):
    denied = sorted(
        {
            f"{check.action} on {check.resource} [template with {check.variant}]: {result}"
            + _example(evaluation, check)
            for check, result in evaluation.checks.items()
            if check.principal == principal and result != "Allowed"
        }
    )
    assert not denied, f"{principal}'s role in template.yaml denies calls its code makes:\n" + "\n".join(denied)


def _example(evaluation: Evaluation, check: Check) -> str:
    same = SAME_CODE.get(check.principal, check.principal)
    call = evaluation.examples.get((same, check.action, check.resource))
    return f"\n    e.g. {call.service}.{call.operation} in {call.test}" if call else ""


@pytest.mark.parametrize("principal", [*PRINCIPALS, *SAME_CODE])
def test_role_grants_nothing_unused(evaluation: Evaluation, principal: str):
    """Least privilege: every action a role allows was needed by some recorded call of its code."""
    used = {check.action for check, result in evaluation.checks.items() if check.principal == principal}
    deployment = evaluation.deployments["optional-parameters"]
    granted: set[str] = set()
    for policy in deployment.role_of(principal).policies:
        statements = policy["policy"]["Statement"]
        for statement in statements if isinstance(statements, list) else [statements]:
            if statement.get("Effect") == "Allow" and statement.get("Sid") not in UNCHECKED_STATEMENTS:
                actions = statement["Action"]
                granted.update([actions] if isinstance(actions, str) else actions)
    unused = sorted(granted - used)
    assert not unused, f"{principal}'s role allows actions no recorded call needed: {unused}"


# Statements for calls the service makes on the role's behalf, not the code (Step Functions log delivery).
UNCHECKED_STATEMENTS = {"ExecutionLogs"}


# ------------------------------------------------------------------------------------------------ network placement

VPC_PARAMETERS = {
    "VpcId": "vpc-0123",
    "SubnetIds": "subnet-a,subnet-b",
    "SubnetsHaveNat": "true",
    "RouteTableIds": "rtb-0123",
    "SystemPromptParameter": PROMPT_PARAMETER,
}
# botocore service name -> the VPC endpoint service that carries it
ENDPOINT_OF = {"dynamodb": "dynamodb", "stepfunctions": "states", "secretsmanager": "secretsmanager", "ssm": "ssm"}


def test_network_placement_matches_what_each_function_calls(recording: Recording):
    """With a VPC, only the functions that use the cache are placed in it, and every AWS service their code was
    recorded calling has an endpoint there (the LLM API and JWKS go through the NAT the Rules insist on)."""
    from tests.support.template_eval import Deployment as Evaluated

    vpc = Evaluated(parameters=VPC_PARAMETERS)
    vpc.check_rules()
    vpc.refs.update({name: f"ref-{name}" for name in vpc.template["Resources"]})
    vpc.attributes.update({"Cache.Endpoint.Address": "cache.vpc", "Cache.Endpoint.Port": "6379"})
    vpc.attributes["CallbackFunctionUrl.FunctionUrl"] = "https://callback.lambda-url.us-east-1.on.aws/"
    endpoints = {
        str(vpc.resolve(r["Properties"]["ServiceName"])).rsplit(".", 1)[1]
        for r in vpc.template["Resources"].values()
        if r["Type"] == "AWS::EC2::VPCEndpoint" and vpc.condition(r["Condition"])
    }
    called: dict[str, set[str]] = {}
    for call in RECORDER.calls:
        if call.principal is not None and call.harness is None:
            called.setdefault(call.principal, set()).add(call.service)
    called["ChatBufferedFunction"] = called.get("ChatBufferedFunction", set()) | called.get("ChatFunction", set())
    placed = set()
    for logical_id, props in vpc.functions().items():
        in_vpc = bool(vpc.resolve({"v": props.get("VpcConfig", {"Ref": "AWS::NoValue"})}).get("v"))
        uses_cache = bool(vpc.environment(logical_id).get("REDIS_URL"))
        assert in_vpc == uses_cache, f"{logical_id}: in the VPC {in_vpc}, uses the cache {uses_cache}"
        if in_vpc:
            placed.add(logical_id)
            assert called.get(logical_id), f"no recorded calls of {logical_id}"
            missing = {ENDPOINT_OF[s] for s in called[logical_id]} - endpoints
            assert not missing, f"{logical_id} calls {sorted(missing)} with no endpoint in the VPC"
    assert placed == {
        "SessionsFunction",
        "ChatFunction",
        "ChatBufferedFunction",
        "ToolWorkerFunction",
        "ContinuationFunction",
    }
    # Without a VPC nothing is placed in one.
    plain = Evaluated()
    assert not any(
        plain.resolve({"v": p.get("VpcConfig", {"Ref": "AWS::NoValue"})}).get("v") for p in plain.functions().values()
    )
