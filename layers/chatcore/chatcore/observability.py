"""Powertools Logger and Metrics shared by chatcore and the handlers.

One instance of each, so a metric counted deep in the cache module is flushed by the handler's
``@metrics.log_metrics`` decorator, and log lines carry the handler's correlation id.

Tracing needs no SDK here: with ``Tracing: Active`` (template.yaml) Lambda itself records each invocation's segment
(init, invocation, overhead) in X-Ray. Powertools' ``Tracer`` is not used: it imports the X-Ray SDK (about half a
second of every cold start; the SDK is in maintenance and reaches end of support on 2027-02-25). Spans inside an
invocation (each DynamoDB, Redis and LLM request) come from OpenTelemetry when wanted: the ADOT Lambda layer
instruments botocore, redis and httpx without code here (README, "Tracing").
"""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, single_metric
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.metrics.functions import is_metrics_disabled

NAMESPACE = "ChatBackend"

# Service names come from POWERTOOLS_SERVICE_NAME (set per function in template.yaml).
logger = Logger()
metrics = Metrics(namespace=NAMESPACE)


def count(name: str, value: int = 1) -> None:
    # Powertools honours POWERTOOLS_METRICS_DISABLED when it flushes, but not in the automatic flush after 100
    # values of one metric, which then prints to stdout: respect the switch here too.
    if is_metrics_disabled():
        return
    metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)


def count_by(name: str, dimension: str, value: str) -> None:
    """Count one ``name`` with its own dimension (``Feedback`` by ``rating``). A dimension added to the shared
    ``metrics`` would apply to every metric flushed with it, so this one is written at once, on its own."""
    if is_metrics_disabled():
        return
    with single_metric(name=name, unit=MetricUnit.Count, value=1, namespace=NAMESPACE) as metric:
        metric.add_dimension(name=dimension, value=value)
