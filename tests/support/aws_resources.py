"""AWS resources that several suites give the template as parameters, created once in moto under one name (the
IAM suite resolves the roles with this ARN, so every test that passes it is checked against the same policy)."""

from __future__ import annotations

import boto3

LLM_SECRET_NAME = "chat-test-llm-api-key"


def llm_key_secret_arn(value: str = "offline") -> str:
    """The ``LlmApiKeySecretArn`` of the tests: a Secrets Manager secret holding the offline model's key."""
    secrets = boto3.client("secretsmanager")
    try:
        arn: str = secrets.create_secret(Name=LLM_SECRET_NAME, SecretString=value)["ARN"]
    except secrets.exceptions.ResourceExistsException:
        arn = secrets.describe_secret(SecretId=LLM_SECRET_NAME)["ARN"]
    return arn
