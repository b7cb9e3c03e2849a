"""One wiring: the container builds each part once, the default container is the only process-wide cache, and
nothing is wired by patching product code."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from chatcore.config import Settings
from chatcore.container import (
    Container,
    built_default_container,
    default_container,
    reset_default_container,
    set_default_container,
)
from chatcore.tools import ToolRegistry

ROOT = Path(__file__).resolve().parents[2]
CHATCORE = ROOT / "layers" / "chatcore" / "chatcore"
ARN = "arn:aws:states:us-east-1:123456789012:stateMachine:x"


def test_each_part_is_built_once_and_shared():
    container = Container(Settings(table_name="t", state_machine_arn=ARN, llm_base_url="http://llm.invalid/v1"))
    assert container.sessions is container.sessions
    assert container.operations is container.engine.deps.operations  # one Operations: sessions' delete uses it too
    assert container.sessions.store is container.store and container.leases.store is container.store
    assert container.engine.deps.sessions is container.sessions and container.engine.deps.replay is container.replay


def test_parts_are_injected_not_patched():
    tools = ToolRegistry()
    container = Container(Settings(llm_base_url="http://llm.invalid/v1"), tools=tools)
    assert container.engine.deps.tools is tools


def test_default_container_is_one_per_process_until_reset():
    settings = Settings(table_name="first")
    set_default_container(lambda: Container(settings))
    try:
        first = default_container()
        assert default_container() is first and built_default_container() is first
        assert first.settings.table_name == "first"
        reset_default_container()  # a cold start: the same factory builds a new one
        assert built_default_container() is None
        second = default_container()
        assert second is not first and second.settings.table_name == "first"
    finally:
        set_default_container(None)
    assert built_default_container() is None


def _sources() -> dict[str, str]:
    return {str(p.relative_to(CHATCORE)): p.read_text() for p in CHATCORE.rglob("*.py")}


def test_no_module_but_the_container_keeps_a_process_wide_cache():
    # openapi.py caches a pure function of the code (the served document), aws.py another (botocore's service
    # models), not state: stated where they are.
    allowed = {"container.py", "web/openapi.py", "aws.py"}
    for name, text in _sources().items():
        if name in allowed:
            continue
        assert not re.search(r"@(functools\.)?(lru_)?cache\b|^\s*global\s", text, re.MULTILINE), name


def test_only_config_reads_the_environment():
    for name, text in _sources().items():
        if name != "config.py":
            assert "os.environ" not in text and "getenv(" not in text, name


def test_no_test_or_benchmark_patches_product_code():
    pattern = re.compile(r"setattr\(\s*([\"']chatcore|[A-Z]\w*\s*,)")
    for folder in ("tests", "bench"):
        for path in (ROOT / folder).rglob("*.py"):
            if "node_modules" in path.parts:
                continue
            assert not pattern.search(path.read_text()), path


class _Secrets:
    """Secrets Manager's ``get_secret_value`` (botocore's parameter name), answering ``value of <arn>``; ``before``
    runs first."""

    def __init__(self, before: Callable[[], None] = lambda: None) -> None:
        self._before = before

    def get_secret_value(self, SecretId: str) -> dict[str, str]:
        self._before()
        return {"SecretString": f"value of {SecretId}"}


def test_secrets_are_read_concurrently_through_one_client():
    """A cold start reads its secrets in parallel threads; each building its own Secrets Manager client doubled the
    client's cost (service model, endpoint rules) and cost the chat function ~100 ms of its cold start."""
    from chatcore.aws import AwsClients

    class CountingClients(AwsClients):
        built = 0

        def secretsmanager(self) -> _Secrets:
            CountingClients.built += 1
            return _Secrets()

    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:"
    settings = Settings(table_name="t", jwt_secret_arn=arn + "jwt", llm_api_key_secret_arn=arn + "llm")
    container = Container(settings, aws=CountingClients())
    assert (container.settings.jwt_secret, container.settings.llm_api_key) == (
        f"value of {arn}jwt",
        f"value of {arn}llm",
    )
    assert CountingClients.built == 1


def test_the_dynamodb_client_is_built_while_the_secrets_are_read():
    """A cold start's secret reads wait on the network; the DynamoDB client every first request uses next is built
    meanwhile. Here a read answers only once that client exists (it would time out if built after)."""
    import threading

    from chatcore.aws import AwsClients

    dynamodb_built = threading.Event()

    def after_dynamodb() -> None:
        assert dynamodb_built.wait(timeout=5), "the DynamoDB client was not built during the read"

    class Clients(AwsClients):
        def secretsmanager(self) -> _Secrets:
            return _Secrets(before=after_dynamodb)

        def dynamodb(self) -> object:  # type: ignore[override]
            dynamodb_built.set()
            return object()

    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:jwt"
    container = Container(Settings(table_name="t", jwt_secret_arn=arn), aws=Clients())
    assert container.settings.jwt_secret == f"value of {arn}"


def test_a_dynamodb_client_that_cannot_be_built_meanwhile_leaves_the_settings_alone():
    from chatcore.aws import AwsClients

    class Clients(AwsClients):
        def secretsmanager(self) -> _Secrets:
            return _Secrets()

        tried = 0

        def dynamodb(self) -> object:  # type: ignore[override]
            Clients.tried += 1
            raise RuntimeError("no region")  # reported where the client is first used

    container = Container(Settings(table_name="t", jwt_secret_arn="arn:jwt"), aws=Clients())
    assert container.settings.jwt_secret == "value of arn:jwt"
    assert Clients.tried == 1
