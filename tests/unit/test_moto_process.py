"""``MotoProcess`` (``python -m local.moto_server``): the benchmarks' DynamoDB in a child process. It serves
DynamoDB with the in-process server's guarantees and is gone after ``stop``."""

from __future__ import annotations

import os
import socket
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest
from botocore.exceptions import ClientError

from local.moto_server import MotoProcess
from local.template import create_table_kwargs


def test_a_child_process_serves_dynamodb_until_stopped():
    with MotoProcess(env=dict(os.environ)) as moto:
        client = boto3.client(
            "dynamodb",
            endpoint_url=moto.url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )
        client.create_table(**create_table_kwargs("child-table"))
        key = {"PK": {"S": "SESSION#a"}, "SK": {"S": "META"}}

        def claim(turn: int) -> str:  # conditional writes racing from many threads: exactly one wins
            try:
                client.put_item(
                    TableName="child-table",
                    Item={**key, "turn": {"N": str(turn)}},
                    ConditionExpression="attribute_not_exists(PK)",
                )
            except ClientError as exc:
                return str(exc.response["Error"]["Code"])
            return "stored"

        with ThreadPoolExecutor(8) as pool:
            outcomes = sorted(pool.map(claim, range(16)))
        assert outcomes == ["ConditionalCheckFailedException"] * 15 + ["stored"]
        port = moto.port
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=1.0):
        pass


def test_a_child_that_cannot_serve_is_reported_not_waited_for():
    # Without its working directory on its path the child cannot import ``local``: it exits at once.
    moto = MotoProcess(env={**os.environ, "PYTHONSAFEPATH": "1", "PYTHONPATH": ""}, start_timeout=30.0)
    try:
        with pytest.raises(RuntimeError, match="exited"):
            moto.start()
    finally:
        moto.stop()
