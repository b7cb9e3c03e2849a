from __future__ import annotations

import pytest

from chatcore.config import LEVEL_NAMES, ConfigError, Settings


def test_defaults():
    settings = Settings.from_env({})
    assert settings.table_name == "ChatTable" and settings.redis_url == "" and settings.auth_mode == "hs256"
    assert settings.allow_anonymous is False and settings.cache_ttl_seconds == 900
    assert settings.redis_cluster is False and settings.redis_tls_ca_file == ""
    assert settings.ui_stream_protocol == "v5"


def test_values_are_parsed():
    settings = Settings.from_env(
        {
            "CHAT_TABLE_NAME": "T",
            "REDIS_URL": " redis://h:6379/0 ",
            "CACHE_TTL_SECONDS": "60",
            "ALLOW_ANONYMOUS": "yes",
            "AUTH_MODE": "JWKS",
            "JWT_ISSUER": "https://cognito-idp.eu-west-1.amazonaws.com/pool/",
            "CORS_ALLOW_ORIGINS": "http://a, http://b",
            "REDIS_TIMEOUT_SECONDS": "0.25",
        }
    )
    assert settings.table_name == "T" and settings.redis_url == "redis://h:6379/0"
    assert settings.cache_ttl_seconds == 60 and settings.allow_anonymous is True
    assert settings.jwks_url == "https://cognito-idp.eu-west-1.amazonaws.com/pool/.well-known/jwks.json"
    assert settings.cors_allow_origins == ("http://a", "http://b") and settings.redis_timeout_seconds == 0.25


@pytest.mark.parametrize(
    "env",
    [
        {"AUTH_MODE": "basic"},
        {"AUTH_MODE": "jwks"},
        {"ALLOW_ANONYMOUS": "maybe"},
        {"CACHE_TTL_SECONDS": "ten"},
        {"CACHE_TTL_SECONDS": "0"},
        {"USER_CONTEXT_MAX_CHARS": "0"},
        {"USER_CONTEXT_MAX_CHARS": "32001"},  # it rides in every prompt: bounded
        {"REDIS_TIMEOUT_SECONDS": "-1"},
        {"ANSWER_WRITE_RETRY_SECONDS": "inf"},  # a retry loop without end
        {"HEARTBEAT_SECONDS": "nan"},
        {"REDIS_CLUSTER": "cluster"},
        {"REDIS_URL": "redis://h:6379/0", "REDIS_TLS_CA_FILE": "/ca.pem"},  # a CA for a connection without TLS
    ],
)
def test_bad_values_fail_at_start(env):
    with pytest.raises(ConfigError):
        Settings.from_env(env)


def test_stream_protocol_level():
    assert Settings.from_env({"UI_STREAM_PROTOCOL": " V7 "}).ui_stream_protocol == "v7"
    assert Settings.from_env({"UI_STREAM_PROTOCOL": ""}).ui_stream_protocol == "v5"
    with pytest.raises(ConfigError, match=r"UI_STREAM_PROTOCOL must be one of v5, v6, v7, got '6'"):
        Settings.from_env({"UI_STREAM_PROTOCOL": "6"})
    # The setting accepts exactly the levels the stream has, read as a request header is.
    from chatcore.stream import LEVELS, protocol_level

    assert set(LEVELS) == set(LEVEL_NAMES)
    for raw in ("v5", " V6", "v7 ", "6", "v8", "vv5"):
        level = protocol_level(raw)
        if level is None:
            with pytest.raises(ConfigError):
                Settings.from_env({"UI_STREAM_PROTOCOL": raw})
        else:
            assert Settings.from_env({"UI_STREAM_PROTOCOL": raw}).ui_stream_protocol == level.name


def test_cluster_and_tls_settings():
    settings = Settings.from_env(
        {"REDIS_URL": "rediss://cache.example:6379", "REDIS_CLUSTER": "true", "REDIS_TLS_CA_FILE": " /etc/ca.pem "}
    )
    assert settings.redis_cluster is True and settings.redis_tls_ca_file == "/etc/ca.pem"


def test_user_context_bound():
    assert Settings.from_env({}).user_context_max_chars == 4000
    assert Settings.from_env({"USER_CONTEXT_MAX_CHARS": "32000"}).user_context_max_chars == 32000


def test_secret_is_not_in_repr():
    assert "s3cret" not in repr(Settings(jwt_secret="s3cret"))


def test_tools_requiring_approval():
    assert Settings.from_env({}).tools_requiring_approval is None  # the tools' own flags
    assert Settings.from_env({"TOOLS_REQUIRING_APPROVAL": ""}).tools_requiring_approval is None  # the template default
    assert Settings.from_env({"TOOLS_REQUIRING_APPROVAL": "none"}).tools_requiring_approval == ()
    names = Settings.from_env({"TOOLS_REQUIRING_APPROVAL": " calculator, rename_session "}).tools_requiring_approval
    assert names == ("calculator", "rename_session")
    assert Settings.from_env({"APPROVAL_TIMEOUT_SECONDS": "60"}).approval_timeout_seconds == 60
    with pytest.raises(ConfigError):
        Settings.from_env({"APPROVAL_TIMEOUT_SECONDS": "5"})
