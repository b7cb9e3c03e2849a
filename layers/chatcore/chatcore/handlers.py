"""Lambda entry points, built once here so every function gets the same Powertools wiring (correlation ids,
metrics with the cold-start metric; the invocation's X-Ray segment is Lambda's own, ``chatcore.observability``).

* ``function_url_handler(factory)``: an ASGI app behind Mangum for a Function URL (payload v2.0); the app is built
  on the first invocation, so configuration is read at run time and reused while the container is warm. A
  configuration error makes every request a JSON 503 naming the setting (``chatcore.web.misconfigured``).
* ``step_handler(step)``: a state-machine task (``chatcore.operation_steps``) on a fresh event loop.
* ``function_asgi_app(app)``: an ASGI app served by uvicorn behind the Lambda Web Adapter.

Each names its function (the logical id in template.yaml): the code runs as that function
(``chatcore.aws.running_as``), which is the role its AWS calls are made with. The managed-runtime entry points
register the SnapStart hooks (``chatcore.snapstart``) with the modules their first invocation loads.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, cast

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from chatcore import snapstart
from chatcore.aws import running_as
from chatcore.observability import logger, metrics

Handler = Callable[[dict[str, Any], LambdaContext], Any]
Asgi = Callable[[Any, Any, Any], Awaitable[None]]

# What the first invocation of each kind of entry point imports (its app or engine is built then): imported before
# a SnapStart snapshot, so that no restored environment pays for it (tests/unit/test_snapstart.py checks the list).
URL_HANDLER_MODULES = ("mangum", "chatcore.web.misconfigured", "chatcore.secret_settings", "chatcore.operations")
STEP_HANDLER_MODULES = (
    "chatcore.runtime",
    "chatcore.secret_settings",
    "chatcore.operations",
    "chatcore.builtin_tools",
    "chatcore.replay",
    "chatcore.dynamo.approvals",
)


def function_url_handler(app_factory: Callable[[], Any], *, function: str) -> Handler:
    adapter: Any = None
    snapstart.register(URL_HANDLER_MODULES)

    @logger.inject_lambda_context(correlation_id_path=correlation_paths.LAMBDA_FUNCTION_URL)
    @metrics.log_metrics(capture_cold_start_metric=True)
    def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        nonlocal adapter
        with running_as(function):
            if adapter is None:
                from mangum import Mangum

                from chatcore.web.misconfigured import build_or_refuse

                adapter = Mangum(build_or_refuse(app_factory), lifespan="off")
            # Mangum types the context with its own protocol; Powertools' LambdaContext is the same object.
            response: dict[str, Any] = adapter(event, cast(Any, context))
        return response

    return cast(Handler, handler)  # Powertools' decorators are typed as returning Any


def step_handler(step: Callable[[Any, dict[str, Any]], Awaitable[dict[str, Any]]], *, function: str) -> Handler:
    snapstart.register(STEP_HANDLER_MODULES)

    @logger.inject_lambda_context
    @metrics.log_metrics(capture_cold_start_metric=True)
    def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        from chatcore.runtime import run_step

        with running_as(function):
            result: dict[str, Any] = run_step(step, event)
        return result

    return cast(Handler, handler)  # Powertools' decorators are typed as returning Any


def function_asgi_app(app: Asgi, *, function: str) -> Asgi:
    async def serve(scope: Any, receive: Any, send: Any) -> None:
        with running_as(function):
            await app(scope, receive, send)

    return serve
