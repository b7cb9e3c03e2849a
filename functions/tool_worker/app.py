"""ToolWorkerFunction: runs one long-running tool for the ToolOperationStateMachine (or registers a callback
tool's task token)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from chatcore.observability import logger, metrics, tracer
from chatcore.operation_steps import run_tool
from chatcore.runtime import run_step


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    result: dict[str, Any] = run_step(run_tool, event)
    return result
