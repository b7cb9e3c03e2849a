"""A request DynamoDB refuses as invalid is our bug, not an outage: a 500 with its own code, never a 503."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from chatcore.aws import AwsClients, call
from chatcore.dynamo.keys import s_attr
from chatcore.dynamo.table import Table
from chatcore.errors import InvalidServiceRequest, ServiceRefused, ServiceUnavailable

pytestmark = pytest.mark.anyio


async def test_a_key_of_the_wrong_type_is_a_500_not_a_503(table_name: str):
    table = Table(table_name, client_factory=AwsClients().dynamodb)
    with pytest.raises(InvalidServiceRequest) as caught:
        await table.get({"PK": s_attr("SESSION#x")})  # no sort key: DynamoDB (and moto) answer ValidationException
    refused = caught.value
    assert not isinstance(refused, ServiceUnavailable)
    assert refused.status == 500 and refused.code == "invalid_service_request"
    assert refused.aws_code == "ValidationException" and isinstance(refused.__cause__, ClientError)


async def test_a_transaction_cancelled_for_an_invalid_item_is_a_500():
    def cancelled(**_kwargs):
        response = {
            "Error": {"Code": "TransactionCanceledException", "Message": "x"},
            "CancellationReasons": [{"Code": "None"}, {"Code": "ValidationError"}],
        }
        raise ClientError(response, "TransactWriteItems")  # what DynamoDB answers for an item over 400 KB

    with pytest.raises(InvalidServiceRequest) as caught:
        await call("DynamoDB", cancelled)
    assert caught.value.status == 500 and caught.value.reasons == ("None", "ValidationError")


async def test_a_step_functions_validation_error_stays_a_refusal_its_adapter_cleans_up_after():
    def invalid(**_kwargs):
        raise ClientError({"Error": {"Code": "ValidationException", "Message": "x"}}, "StartExecution")

    with pytest.raises(ServiceRefused) as caught:
        await call("Step Functions", invalid)
    assert caught.value.aws_code == "ValidationException"
