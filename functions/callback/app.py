"""CallbackFunction: external services report an async tool's completion (HMAC-signed) on a Function URL."""

from __future__ import annotations

from functools import cache
from typing import Any, cast

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from mangum import Mangum

from chatcore.observability import logger, metrics, tracer
from chatcore.web.callback_app import default_callback_app


@cache
def _adapter() -> Mangum:
    return Mangum(default_callback_app(), lifespan="off")


@logger.inject_lambda_context(correlation_id_path=correlation_paths.LAMBDA_FUNCTION_URL)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    response: dict[str, Any] = _adapter()(event, cast(Any, context))
    return response
