"""Load the real Lambda handler modules (``functions/<dir>/app.py``) by path, as the Lambda runtime does, and call
them with a Lambda-like context."""

from __future__ import annotations

import importlib.util
import uuid
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


@cache
def load_handler_module(function_dir: str) -> ModuleType:
    path = ROOT / "functions" / function_dir / "app.py"
    spec = importlib.util.spec_from_file_location(f"functions_{function_dir}_app", path)
    if spec is None or spec.loader is None:
        raise ImportError(path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class LambdaContext:
    function_name: str = "local-function"
    memory_limit_in_mb: int = 1024
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:local-function"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def get_remaining_time_in_millis(self) -> int:
        return 300_000


def invoke(function_dir: str, event: dict[str, Any], function_name: str | None = None) -> Any:
    handler = load_handler_module(function_dir).handler
    name = function_name or function_dir
    return handler(
        event,
        LambdaContext(
            function_name=name, invoked_function_arn=f"arn:aws:lambda:us-east-1:123456789012:function:{name}"
        ),
    )
