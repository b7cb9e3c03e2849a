"""SessionsFunction: session CRUD on a Lambda Function URL (payload v2.0), an ASGI app behind Mangum."""

from __future__ import annotations

from functools import cache
from typing import Any, cast

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from mangum import Mangum

from chatcore.observability import logger, metrics, tracer
from chatcore.web.sessions_app import default_sessions_app


@cache
def _adapter() -> Mangum:
    # Built on the first invocation, so configuration is read at run time and reused while warm.
    return Mangum(default_sessions_app(), lifespan="off")


@logger.inject_lambda_context(correlation_id_path=correlation_paths.LAMBDA_FUNCTION_URL)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # Mangum types the context with its own protocol; Powertools' LambdaContext is the same object.
    response: dict[str, Any] = _adapter()(event, cast(Any, context))
    return response
