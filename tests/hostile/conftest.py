"""The hostile suite's stack: every function's routes (sessions, chat, callback) on one loopback origin, on moto and a
real redis-server, as the integration tests run it; one stack per module, with a table of its own."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator

import boto3
import pytest

from local.template import create_table_kwargs
from tests.conftest import ChatStack, start_chat_stack, stop_chat_stack
from tests.support.redis_server import RedisServer
from tests.support.tokens import make_token

# The stack checks both, so a token for another audience or from another issuer is one more kind to refuse.
AUDIENCE = "chat-hostile"
ISSUER = "https://issuer.hostile.test"


def token(stack: ChatStack, user: str, **claims: object) -> str:
    """A token the stack accepts for ``user`` (``claims`` override or add)."""
    return make_token(user, secret=stack.settings.jwt_secret, **{"aud": AUDIENCE, "iss": ISSUER, **claims})


def bearer(stack: ChatStack, user: str, **claims: object) -> dict[str, str]:
    return {"authorization": f"Bearer {token(stack, user, **claims)}"}


def scan(table: str) -> list[str]:
    """Every item of the table, comparable: what "nothing written" is checked against."""
    client = boto3.client("dynamodb", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    items = [item for page in client.get_paginator("scan").paginate(TableName=table) for item in page["Items"]]
    return sorted(json.dumps(item, sort_keys=True) for item in items)


@pytest.fixture(scope="module")
def hostile_stack(redis_server: RedisServer) -> Iterator[ChatStack]:
    table = f"hostile-{uuid.uuid4().hex[:12]}"
    client = boto3.client("dynamodb", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    client.create_table(**create_table_kwargs(table))
    chat = start_chat_stack(table, redis_server.url, jwt_audience=AUDIENCE, jwt_issuer=ISSUER)
    yield chat
    stop_chat_stack(chat)
    client.delete_table(TableName=table)
