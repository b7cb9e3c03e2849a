"""ChatFunction: one chat turn per request, streamed as an AI SDK UI message stream.

One ASGI app, two entry points:

* ``asgi_app``: served by uvicorn (``run.sh``) behind the AWS Lambda Web Adapter with
  ``AWS_LWA_INVOKE_MODE=response_stream``, so the Function URL (``InvokeMode: RESPONSE_STREAM``) streams tokens.
* ``handler``: the same app behind Mangum, buffered, for ``sam local invoke -e events/chat-*.json`` and plain
  invokes; it returns the whole SSE body.
"""

from __future__ import annotations

from functools import cache
from typing import Any, cast

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from mangum import Mangum

from chatcore.observability import logger, metrics, tracer
from chatcore.web.chat_app import default_chat_app, lazy

asgi_app = lazy(default_chat_app)


@cache
def _adapter() -> Mangum:
    return Mangum(default_chat_app(), lifespan="off")


@logger.inject_lambda_context(correlation_id_path=correlation_paths.LAMBDA_FUNCTION_URL)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    response: dict[str, Any] = _adapter()(event, cast(Any, context))
    return response
