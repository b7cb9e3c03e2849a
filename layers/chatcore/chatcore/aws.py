"""AWS clients (``AwsClients``: one set per container, built on first use), and ``call``: the one place where botocore
errors become ``chatcore.errors`` types.

botocore is imported here only; the DynamoDB and Step Functions adapters (``chatcore.dynamo``, ``chatcore.operations``)
make every request through ``call``. Region and endpoint come from the standard AWS variables (``AWS_DEFAULT_REGION``,
``AWS_ENDPOINT_URL``), which botocore itself reads. The clients are botocore's own (what ``boto3.client`` returns):
boto3 adds resources and S3 transfers, none of which is used here, for about 50 ms of every cold start.

``current_function`` names the function of ``template.yaml`` (its logical id) whose code is running, so whose IAM
role the AWS calls made here need: the Lambda entry points (``chatcore.handlers``) set it, and the local stack sets
it per route, as it serves every function's routes on one origin. The IAM tests hold each recorded call against
that function's role.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cache
from typing import TYPE_CHECKING, Any

import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, DataNotFoundError
from botocore.loaders import JSONFileLoader, Loader

from chatcore.errors import InvalidServiceRequest, ServiceRefused, ServiceUnavailable

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

_CONFIG = Config(
    retries={"max_attempts": 4, "mode": "standard"},
    connect_timeout=2,
    read_timeout=5,
    max_pool_connections=32,
)


DYNAMODB = "DynamoDB"  # the service name the DynamoDB adapter (``chatcore.dynamo.table``) calls with

current_function: ContextVar[str | None] = ContextVar("current_function", default=None)


@contextmanager
def running_as(function: str) -> Iterator[None]:
    """Run the block as ``function`` (a logical id of template.yaml); tasks and threads started inside inherit it."""
    token = current_function.set(function)
    try:
        yield
    finally:
        current_function.reset(token)


class _ServiceNames(Sequence[str]):
    """The services botocore has models of, for one model type: a name is checked in its own folder; the whole list
    is made only if something iterates it."""

    def __init__(self, loader: ServiceModels, type_name: str) -> None:
        self._loader = loader
        self._type_name = type_name

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str) or not name.replace("-", "").isalnum():
            return False
        try:
            return bool(self._loader.list_api_versions(name, self._type_name))
        except DataNotFoundError:
            return False

    def _all(self) -> list[str]:
        names: list[str] = Loader.list_available_services(self._loader, self._type_name)
        return names

    def __getitem__(self, index: Any) -> Any:
        return self._all()[index]

    def __len__(self) -> int:
        return len(self._all())


class PlainJsonFiles(JSONFileLoader):
    """botocore's reader of its data files, except that objects become plain dicts: botocore's makes each an
    ``OrderedDict`` (a Python 2 leftover: a dict keeps its order too, and nothing in botocore needs more), which makes
    parsing what a cold start reads (endpoints.json, 1.2 MB, and each client's model) about three times as slow."""

    _OPENERS: tuple[tuple[str, Callable[[str, str], Any]], ...] = ((".json", open), (".json.gz", gzip.open))

    def load_file(self, file_path: str) -> Any:
        """The data of ``file_path`` + ``.json`` (or ``.json.gz``), None if neither file exists."""
        for extension, opener in self._OPENERS:
            path = file_path + extension
            if os.path.isfile(path):
                with opener(path, "rb") as file:
                    return json.loads(file.read().decode("utf-8"))
        return None


class ServiceModels(Loader):
    """botocore's loader, except for two steps: its files are parsed into plain dicts (``PlainJsonFiles``), and before
    loading a service's model it checks the name against the list of every service it has, which it makes by looking
    into each of ~440 folders (thousands of ``stat`` calls, 10-30 ms of every cold start); here the name is looked
    up in its own folder."""

    FILE_LOADER_CLASS = PlainJsonFiles

    def list_available_services(self, type_name: str) -> Sequence[str]:  # type: ignore[override]  # read with `in`
        return _ServiceNames(self, type_name)


@cache
def service_models() -> Loader:
    """botocore's loader of the service models (the JSON files of the installed botocore), shared by every session
    of the process: a pure function of the code, like the models boto3's default session kept. A client of a new
    session then costs milliseconds instead of reading and parsing its model again."""
    return ServiceModels()


def _new_session() -> botocore.session.Session:
    session = botocore.session.get_session()
    session.register_component("data_loader", service_models())
    return session


def load_service_models(services: Iterable[str]) -> None:
    """Read into ``service_models()`` what a client of each service reads from botocore's data files, by building one
    that is thrown away at once (in a session of its own): it gets placeholder credentials, so none are resolved,
    and makes no request."""
    session = _new_session()
    for service in services:
        # A placeholder, not a secret: this client is dropped unused.
        session.create_client(service, config=_CONFIG, aws_access_key_id="unused", aws_secret_access_key="unused")  # noqa: S106


class AwsClients:
    """The AWS clients of one container: one botocore session (its credentials and connection pools), each client
    built on first use and kept while the container is warm."""

    def __init__(self) -> None:
        self._session: botocore.session.Session | None = None
        self._clients: dict[str, Any] = {}
        self._used = False  # a client was built (or tried): the session may hold resolved credentials

    def _client(self, service: str) -> Any:
        client = self._clients.get(service)
        if client is None:
            if self._session is None:
                self._session = _new_session()
            self._used = True
            client = self._clients[service] = self._session.create_client(service, config=_CONFIG)
        return client

    def prepare(self, services: Iterable[str]) -> None:
        """Build the session and load the models of ``services`` now, before a SnapStart snapshot: a botocore session
        registers ~120 event handlers (15 ms), which every restored environment would pay again. The session builds
        no client (the models are loaded by throwaway clients of another session, into the shared
        ``service_models()``), so it has resolved no credentials and read no configuration file."""
        if self._session is None:
            self._session = _new_session()
        load_service_models(services)

    def renew(self) -> None:
        """Forget the clients (after a SnapStart restore), and their session if it built one: the next call builds
        new clients, which resolve the credentials again and open new connections. A session that built no client
        (``prepare``) has resolved nothing and is kept, as are the loaded service models."""
        if self._used:
            self._session = None
            self._used = False
        self._clients = {}

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
    transaction and the item a failed condition saw decoded here), or ``InvalidServiceRequest`` when DynamoDB
    refused the request itself as invalid; a connection-level failure becomes ``ServiceUnavailable``. All are chained
    to the botocore error."""
    try:
        return fn(**kwargs)
    except ClientError as exc:
        raise refusal(service, exc) from exc
    except BotoCoreError as exc:
        raise ServiceUnavailable("AWS is unreachable") from exc


async def call[T](service: str, fn: Callable[..., T], /, **kwargs: Any) -> T:
    """``call_sync`` in a thread: boto3 blocks."""
    return await asyncio.to_thread(call_sync, service, fn, **kwargs)


def refusal(service: str, exc: ClientError) -> ServiceRefused | InvalidServiceRequest:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    reasons = tuple(reason.get("Code", "None") for reason in exc.response.get("CancellationReasons", []))
    # DynamoDB only: the Step Functions adapters clean up after any refusal (a failed start releases its guard).
    if service == DYNAMODB and (code == "ValidationException" or "ValidationError" in reasons):
        message = f"{service} refused a request as invalid ({code})"
        return InvalidServiceRequest(message, aws_code=code, reasons=reasons)
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
