"""Record every AWS call made in the test process, with the IAM principal it is made as (a pytest plugin).

A botocore ``before-parameter-build`` hook, installed for every botocore session created after this plugin loads
(boto3's default session included), records for each API call:

* who makes it: the template function the code runs as (``chatcore.aws.current_function``: set by the Lambda entry
  points and, in the local stack, per route), or the state machine when moto's Step Functions interpreter invokes a
  task function; ``None`` when neither (the test itself, fixtures, direct calls into chatcore);
* what IAM authorises: one ``(action, resource ARN)`` per authorisation the call needs (each item of a
  ``TransactWriteItems`` separately, ``Query`` on an index as ``table/<t>/index/<i>``, ...). A call without a rule
  here is recorded with the resource ``UNKNOWN`` so that the IAM test fails until a rule is written.

The records of the whole session are kept; ``tests/iam/test_iam_policies.py`` checks the attributed ones against
the roles of ``template.yaml``. Code of a test that is not a function's (creating tables, seeding, polling) runs
inside ``RECORDER.harness()`` where a test must show that it made no unattributed call.
"""

from __future__ import annotations

import sys
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import botocore.handlers

from chatcore.aws import current_function

ACCOUNT = "123456789012"  # moto's default account
STATE_MACHINE = "ToolOperationStateMachine"  # the one state machine (logical id) whose interpreter calls AWS
UNKNOWN = "UNKNOWN"

_HARNESS: ContextVar[str | None] = ContextVar("iam_harness", default=None)


@dataclass(frozen=True)
class Call:
    principal: str | None  # a logical id of template.yaml, or None when unattributed
    service: str  # botocore service name, e.g. "stepfunctions"
    operation: str  # e.g. "StartExecution"
    authorizations: tuple[tuple[str, str], ...]  # (IAM action, resource ARN) pairs the call needs
    harness: str | None  # why the test itself made this call (RECORDER.harness(reason)), else None
    test: str  # the pytest node id running when the call was made
    thread: str

    def describe(self) -> str:
        return f"{self.principal or 'UNATTRIBUTED'} {self.service}.{self.operation} in {self.test} ({self.thread})"


class Recorder:
    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.current_test = "<no test>"
        self._lock = threading.Lock()

    def mark(self) -> int:
        with self._lock:
            return len(self.calls)

    def since(self, mark: int) -> list[Call]:
        with self._lock:
            return self.calls[mark:]

    @contextmanager
    def harness(self, reason: str) -> Iterator[None]:
        """Calls made inside are the test's own (setup, seeding, polling), made with no function's role."""
        token = _HARNESS.set(reason)
        try:
            yield
        finally:
            _HARNESS.reset(token)

    def on_call(self, params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        service = model.service_model.service_name
        prefix = model.service_model.signing_name or model.service_model.endpoint_prefix
        region = str(context.get("client_region") or "us-east-1")
        try:
            authorizations = authorizations_for(service, prefix, model.name, params, region)
        except (KeyError, TypeError, AttributeError):  # malformed params: botocore rejects them right after
            authorizations = [(f"{prefix}:{model.name}", UNKNOWN)]
        call = Call(
            principal=current_function.get() or _state_machine_caller(),
            service=service,
            operation=model.name,
            authorizations=tuple(authorizations),
            harness=_HARNESS.get(),
            test=self.current_test,
            thread=threading.current_thread().name,
        )
        with self._lock:
            self.calls.append(call)


def _state_machine_caller() -> str | None:
    """The state machine when the call comes from moto's Step Functions interpreter (it invokes the task
    functions with the state machine's role), else None."""
    frame = sys._getframe(2)
    while frame is not None:
        if str(frame.f_globals.get("__name__", "")).startswith("moto.stepfunctions"):
            return STATE_MACHINE
        frame = frame.f_back  # type: ignore[assignment]
    return None


_TRANSACT_ACTIONS = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
}
_STATE_MACHINE_OPS = {"StartExecution", "StartSyncExecution", "ListExecutions", "DescribeStateMachine"}
_EXECUTION_OPS = {"StopExecution", "DescribeExecution", "GetExecutionHistory"}
_TASK_TOKEN_OPS = {"SendTaskSuccess", "SendTaskFailure", "SendTaskHeartbeat"}  # no resource-level permissions


def authorizations_for(
    service: str, prefix: str, operation: str, params: dict[str, Any], region: str
) -> list[tuple[str, str]]:
    """The (IAM action, resource ARN) pairs that authorise one API call, as the service evaluates them."""

    def arn(rest: str) -> str:
        return f"arn:aws:{prefix}:{region}:{ACCOUNT}:{rest}"

    def table(name: str, index: str | None = None) -> str:
        base = name if name.startswith("arn:") else arn(f"table/{name}")
        return f"{base}/index/{index}" if index else base

    if service == "dynamodb":
        if operation == "TransactWriteItems":
            return [
                (f"dynamodb:{_TRANSACT_ACTIONS[kind]}", table(request["TableName"]))
                for item in params["TransactItems"]
                for kind, request in item.items()
            ]
        if operation == "TransactGetItems":
            return [("dynamodb:GetItem", table(item["Get"]["TableName"])) for item in params["TransactItems"]]
        if operation in ("BatchWriteItem", "BatchGetItem"):
            return [(f"dynamodb:{operation}", table(name)) for name in params["RequestItems"]]
        if "TableName" in params:
            return [(f"dynamodb:{operation}", table(params["TableName"], params.get("IndexName")))]
    if service == "stepfunctions":
        if operation in _STATE_MACHINE_OPS:
            return [(f"states:{operation}", params["stateMachineArn"])]
        if operation in _EXECUTION_OPS:
            return [(f"states:{operation}", params["executionArn"])]
        if operation in _TASK_TOKEN_OPS:
            return [(f"states:{operation}", "*")]
        if operation in ("CreateStateMachine", "ListStateMachines"):
            return [(f"states:{operation}", "*")]
    if service == "secretsmanager" and operation in ("GetSecretValue", "DescribeSecret"):
        secret = str(params["SecretId"])
        return [(f"secretsmanager:{operation}", secret if secret.startswith("arn:") else arn(f"secret:{secret}"))]
    if service == "ssm" and operation in ("GetParameter", "GetParameters"):
        names = [params["Name"]] if operation == "GetParameter" else list(params["Names"])
        return [
            (
                f"ssm:{operation}",
                name if name.startswith("arn:") else arn("parameter" + ("" if name.startswith("/") else "/") + name),
            )
            for name in names
        ]
    if service == "lambda" and operation == "Invoke":
        name = str(params["FunctionName"])
        function = name if name.startswith("arn:") else arn(f"function:{name}")
        if params.get("Qualifier") and function.count(":") == 6:
            function += f":{params['Qualifier']}"
        return [("lambda:InvokeFunction", function)]  # with its qualifier (an alias is what the role allows)
    return [(f"{prefix}:{operation}", UNKNOWN)]


RECORDER = Recorder()
_EVENT = "before-parameter-build"


def _install() -> None:
    """Every botocore session created from now on records its calls (boto3's default session is created lazily;
    one that exists already gets the hook too, for the clients it creates from now on)."""
    if (_EVENT, RECORDER.on_call) not in botocore.handlers.BUILTIN_HANDLERS:
        botocore.handlers.BUILTIN_HANDLERS.append((_EVENT, RECORDER.on_call))
    import boto3

    if boto3.DEFAULT_SESSION is not None:
        boto3.DEFAULT_SESSION.events.register(_EVENT, RECORDER.on_call, unique_id="iam-recorder")


_install()


def pytest_runtest_setup(item: Any) -> None:
    RECORDER.current_test = item.nodeid


_CHECKED = {"collected": False}


def pytest_collection_modifyitems(items: list[Any]) -> None:
    """The IAM checks run last, so that they see the calls of every test of the session."""
    items.sort(key=lambda item: item.get_closest_marker("iam_check") is not None)
    _CHECKED["collected"] = any(item.get_closest_marker("iam_check") for item in items)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _CHECKED["collected"]:
        return
    counts = Counter(c.principal for c in RECORDER.calls if c.principal)
    summary = ", ".join(f"{principal} {n}" for principal, n in sorted(counts.items()))
    terminalreporter.write_line(f"AWS calls held against template.yaml's roles: {summary or 'none'}")


def pytest_configure(config: Any) -> None:
    config.addinivalue_line(
        "markers", "iam_check: checks the session's recorded AWS calls (runs after every other test)"
    )
