"""A JSON API app: the one error shape for every failure (our errors, 404/405, crashes), no slash redirects
(an API answers ``/sessions/`` with a JSON 404, not a bodiless 307), and repeated slashes collapsed: a Function URL
output ends in ``/``, so ``${URL}/chat`` arrives as ``//chat`` and must still route."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from chatcore.web.errors import EXCEPTION_HANDLERS

_SLASHES = re.compile(r"/{2,}")
_RAW_SLASHES = re.compile(rb"/{2,}")


class CollapseSlashes:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and "//" in scope["path"]:
            scope = {**scope, "path": _SLASHES.sub("/", scope["path"])}
            if isinstance(scope.get("raw_path"), bytes):
                scope["raw_path"] = _RAW_SLASHES.sub(b"/", scope["raw_path"])
        await self.app(scope, receive, send)


def json_api(routes: Sequence[BaseRoute], *, middleware: Sequence[Middleware] = (), **kwargs: Any) -> Starlette:
    app = Starlette(
        routes=list(routes),
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[Middleware(CollapseSlashes), *middleware],
        **kwargs,
    )
    app.router.redirect_slashes = False
    return app
