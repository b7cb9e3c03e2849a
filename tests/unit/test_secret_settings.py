"""Secrets named by *_SECRET_ARN settings: read once, at once, and a failure names the setting."""

from __future__ import annotations

import threading

import pytest

from chatcore.aws import current_function, running_as
from chatcore.config import ConfigError, Settings
from chatcore.errors import ServiceUnavailable
from chatcore.secret_settings import with_secrets

ARNS = {"jwt_secret_arn": "arn:jwt", "llm_api_key_secret_arn": "arn:llm", "redis_url_secret_arn": "arn:redis"}


def test_every_secret_is_read_and_all_at_once():
    both_waiting = threading.Barrier(3, timeout=5)  # a read one after the other would break it

    def read(arn: str) -> str:
        both_waiting.wait()
        return {"arn:jwt": " j" * 20, "arn:llm": "sk-1\n", "arn:redis": "redis://cache:6379/0"}[arn]

    with running_as("SessionsFunction"):  # the reads run as the function, whichever thread makes them
        settings = with_secrets(Settings(**ARNS), read=lambda arn: read(arn) if current_function.get() else "")
    assert (settings.jwt_secret, settings.llm_api_key, settings.redis_url) == (
        "j " * 19 + "j",
        "sk-1",
        "redis://cache:6379/0",
    )
    assert settings.jwt_secret_arn == "arn:jwt"  # the ARNs stay


def test_a_value_given_directly_is_not_read():
    asked: list[str] = []

    def read(arn: str) -> str:
        asked.append(arn)
        return "k"

    settings = with_secrets(Settings(jwt_secret="x" * 32, llm_api_key_secret_arn="arn:llm"), read=read)
    assert asked == ["arn:llm"] and settings.jwt_secret == "x" * 32 and settings.llm_api_key == "k"


@pytest.mark.parametrize(
    ("failure", "message"),
    [
        ("unreadable", "LLM_API_KEY_SECRET_ARN: the secret could not be read"),
        ("", "LLM_API_KEY_SECRET_ARN: the secret is empty"),
    ],
)
def test_a_secret_that_cannot_be_used_names_its_setting(failure, message):
    def read(arn: str) -> str:
        if arn == "arn:llm":
            if failure:
                raise ServiceUnavailable("AWS is unreachable")
            return "  "
        return "value"

    with pytest.raises(ConfigError, match=message):
        with_secrets(Settings(**ARNS), read=read)


def test_meanwhile_runs_while_the_reads_are_on_their_way():
    started = threading.Event()
    meanwhile_done = threading.Event()

    def read(arn: str) -> str:
        started.set()
        assert meanwhile_done.wait(timeout=5), "the read finished before meanwhile ran"
        return "k" * 32

    def meanwhile() -> None:
        assert started.wait(timeout=5)  # one read is in flight (in another thread: a single secret too)
        meanwhile_done.set()

    settings = with_secrets(Settings(jwt_secret_arn="arn:jwt"), read=read, meanwhile=meanwhile)
    assert settings.jwt_secret == "k" * 32


def test_meanwhile_runs_when_there_is_no_secret_to_read():
    ran: list[bool] = []
    settings = Settings(jwt_secret="x" * 32)
    assert with_secrets(settings, read=lambda arn: "", meanwhile=lambda: ran.append(True)) is settings
    assert ran == [True]
