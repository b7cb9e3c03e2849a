"""boto3 clients, built on first use and cached across warm invocations.

boto3 is imported here and in the store only. Region and endpoint come from the standard AWS variables
(``AWS_REGION``, ``AWS_ENDPOINT_URL``), which boto3 itself reads.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

_CONFIG = Config(
    retries={"max_attempts": 4, "mode": "standard"},
    connect_timeout=2,
    read_timeout=5,
    max_pool_connections=32,
)


@cache
def dynamodb_client() -> DynamoDBClient:
    return boto3.client("dynamodb", config=_CONFIG)


def reset_clients() -> None:
    """Drop cached clients (tests switch endpoints between cases)."""
    dynamodb_client.cache_clear()
