"""Sample events and a Lambda context for tests; handler modules load through ``local.handlers``."""

from __future__ import annotations

import json
from typing import Any

from local.handlers import ROOT, LambdaContext, load_handler_module

EVENTS = ROOT / "events"
__all__ = ["EVENTS", "FakeLambdaContext", "load_event", "load_handler_module"]


def load_event(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / f"{name}.json").read_text())
    return event


# Lambda-like context of the local invoker (function name, ARN, request id, remaining time).
FakeLambdaContext = LambdaContext
