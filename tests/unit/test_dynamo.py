"""The DynamoDB adapter's pure parts: the expression builder, the error translation, the codecs."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from chatcore.aws import call
from chatcore.dynamo.codecs import decode_meta, encode_meta, with_messages
from chatcore.dynamo.expressions import Expression
from chatcore.dynamo.keys import SESSION_ALIVE, n_attr, s_attr
from chatcore.errors import ServiceRefused, ServiceUnavailable
from chatcore.models import ChatMessage, ChatSession, Usage, utcnow

pytestmark = pytest.mark.anyio


def test_expression_generates_placeholders_once_per_name():
    ex = Expression().increment("version").set("status", s_attr("active")).add("usage_total", n_attr(3))
    ex.remove("summary").require(SESSION_ALIVE, ex.eq("version", n_attr(4)))
    assert ex.params() == {
        "UpdateExpression": "SET #n0 = #n0 + :v0, #n1 = :v1 ADD #n2 :v2 REMOVE #n3",
        "ConditionExpression": f"{SESSION_ALIVE} AND #n0 = :v3",
        "ExpressionAttributeNames": {"#n0": "version", "#n1": "status", "#n2": "usage_total", "#n3": "summary"},
        "ExpressionAttributeValues": {":v0": n_attr(1), ":v1": s_attr("active"), ":v2": n_attr(3), ":v3": n_attr(4)},
    }


def test_expression_leaves_out_empty_parts():
    assert Expression().params() == {}
    ex = Expression()
    ex.key(ex.eq("PK", s_attr("p"))).filter(ex.one_of("status", [s_attr("a"), s_attr("b")]))
    assert ex.params() == {
        "KeyConditionExpression": "#n0 = :v0",
        "FilterExpression": "#n1 IN (:v1, :v2)",
        "ExpressionAttributeNames": {"#n0": "PK", "#n1": "status"},
        "ExpressionAttributeValues": {":v0": s_attr("p"), ":v1": s_attr("a"), ":v2": s_attr("b")},
    }


async def test_client_errors_become_service_refused_with_reasons_and_item():
    def cancelled(**_kwargs):
        response = {
            "Error": {"Code": "TransactionCanceledException", "Message": "x"},
            "CancellationReasons": [{"Code": "None"}, {"Code": "ConditionalCheckFailed"}],
            "Item": {"PK": {"S": "p"}},
        }
        raise ClientError(response, "TransactWriteItems")

    with pytest.raises(ServiceRefused) as caught:
        await call("DynamoDB", cancelled)
    refused = caught.value
    assert refused.status == 503 and refused.message == "DynamoDB request failed (TransactionCanceledException)"
    assert refused.reasons == ("None", "ConditionalCheckFailed") and refused.item == {"PK": {"S": "p"}}
    assert refused.cancelled and refused.condition_failed
    assert isinstance(refused.__cause__, ClientError)


async def test_connection_errors_become_service_unavailable():
    def unreachable(**_kwargs):
        raise EndpointConnectionError(endpoint_url="http://nowhere")

    with pytest.raises(ServiceUnavailable) as caught:
        await call("DynamoDB", unreachable)
    assert not isinstance(caught.value, ServiceRefused) and caught.value.message == "AWS is unreachable"


def test_meta_keeps_totals_and_messages_give_the_per_call_list():
    session = ChatSession.new("u1", title="t", metadata={"k": 1})
    messages = [
        ChatMessage(role="user", content="hi"),
        ChatMessage(role="assistant", content="a", usage=Usage(prompt_tokens=2, completion_tokens=1, total_tokens=3)),
        ChatMessage(role="assistant", content="b", usage=Usage(prompt_tokens=4, completion_tokens=1, total_tokens=5)),
    ]
    for seq, message in enumerate(messages, start=1):
        message.seq, message.parent_seq = seq, seq - 1
    item = encode_meta(session, utcnow(), messages)
    assert {name: item[name] for name in ("usage_prompt", "usage_completion", "usage_total")} == {
        "usage_prompt": n_attr(6),
        "usage_completion": n_attr(2),
        "usage_total": n_attr(8),
    }
    meta = decode_meta(item)
    assert meta.usage == [] and meta.usage_totals == Usage(prompt_tokens=6, completion_tokens=2, total_tokens=8)
    whole = with_messages(meta, messages)
    assert whole.usage == [messages[1].usage, messages[2].usage]
    assert Usage.total(whole.usage) == whole.usage_totals
