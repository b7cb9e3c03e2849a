"""A JSON API app: the one error shape for every failure (our errors, 404/405, crashes) and no slash redirects
(an API answers ``/sessions/`` with a JSON 404, not a bodiless 307)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.routing import BaseRoute

from chatcore.web.errors import EXCEPTION_HANDLERS


def json_api(routes: Sequence[BaseRoute], **kwargs: Any) -> Starlette:
    app = Starlette(routes=list(routes), exception_handlers=EXCEPTION_HANDLERS, **kwargs)
    app.router.redirect_slashes = False
    return app
