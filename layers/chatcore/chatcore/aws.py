"""boto3 clients (``AwsClients``: one set per container, built on first use), and ``call``: the one place where botocore
errors become ``chatcore.errors`` types.

boto3 and botocore are imported here only; the DynamoDB and Step Functions adapters (``chatcore.dynamo``,
``chatcore.operations``) make every request through ``call``. Region and endpoint come from the standard AWS variables
(``AWS_REGION``, ``AWS_ENDPOINT_URL``), which boto3 itself reads.

``current_function`` names the function of ``template.yaml`` (its logical id) whose code is running, so whose IAM
role the AWS calls made here need: the Lambda entry points (``chatcore.handlers``) set it, and the local stack sets
it per route, as it serves every function's routes on one origin. The IAM tests hold each recorded call against
that function's role.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from chatcore.errors import ServiceRefused, ServiceUnavailable

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

_CONFIG = Config(
    retries={"max_attempts": 4, "mode": "standard"},
    connect_timeout=2,
    read_timeout=5,
    max_pool_connections=32,
)


current_function: ContextVar[str | None] = ContextVar("current_function", default=None)


@contextmanager
def running_as(function: str) -> Iterator[None]:
    """Run the block as ``function`` (a logical id of template.yaml); tasks and threads started inside inherit it."""
    token = current_function.set(function)
    try:
        yield
    finally:
        current_function.reset(token)


class AwsClients:
    """The boto3 clients of one container, each built on first use and kept while the container is warm."""

    def __init__(self) -> None:
        self._clients: dict[str, Any] = {}

    def _client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = boto3.client(service, config=_CONFIG)  # type: ignore[call-overload]
        return self._clients[service]

    def dynamodb(self) -> DynamoDBClient:
        client: DynamoDBClient = self._client("dynamodb")
        return client

    def secretsmanager(self) -> Any:
        return self._client("secretsmanager")

    def ssm(self) -> Any:
        return self._client("ssm")

    def stepfunctions(self) -> Any:
        return self._client("stepfunctions")


def call_sync[T](service: str, fn: Callable[..., T], /, **kwargs: Any) -> T:
    """Make a boto3 call. An error answer becomes ``ServiceRefused`` (its code, the cancellation reasons of a
    transaction and the item a failed condition saw decoded here); a connection-level failure becomes
    ``ServiceUnavailable``. Both are chained to the botocore error."""
    try:
        return fn(**kwargs)
    except ClientError as exc:
        raise refusal(service, exc) from exc
    except BotoCoreError as exc:
        raise ServiceUnavailable("AWS is unreachable") from exc


async def call[T](service: str, fn: Callable[..., T], /, **kwargs: Any) -> T:
    """``call_sync`` in a thread: boto3 blocks."""
    return await asyncio.to_thread(call_sync, service, fn, **kwargs)


def refusal(service: str, exc: ClientError) -> ServiceRefused:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    reasons = tuple(reason.get("Code", "None") for reason in exc.response.get("CancellationReasons", []))
    item: dict[str, Any] | None = exc.response.get("Item")  # type: ignore[assignment]
    return ServiceRefused(f"{service} request failed ({code})", aws_code=code, reasons=reasons, item=item)


def read_secret(client: Any, arn: str) -> str:
    """A Secrets Manager secret's string value (cached by the caller); errors name the AWS code, never the value."""
    found = call_sync("secretsmanager", client.get_secret_value, SecretId=arn)
    value = found.get("SecretString")
    if not isinstance(value, str):
        raise ServiceUnavailable("the secret has no string value")
    return value


def read_parameter(client: Any, name: str) -> str:
    value: str = call_sync("ssm", client.get_parameter, Name=name, WithDecryption=True)["Parameter"]["Value"]
    return value
