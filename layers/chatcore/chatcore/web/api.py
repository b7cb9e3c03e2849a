"""A JSON API app: the one error shape for every failure (our errors, 404/405, crashes), no slash redirects
(an API answers ``/sessions/`` with a JSON 404, not a bodiless 307), repeated slashes collapsed (a Function URL
output ends in ``/``, so ``${URL}/chat`` arrives as ``//chat`` and must still route), and one route per path: the
routes of one path with different methods are served as one, so a 405 names every method of the path in ``Allow``
(Starlette answers with the first route's methods only)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Route
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


class _ByMethod:
    """The ASGI app of one path's routes: the request goes to the route of its method (the route already checked
    that the method is one of them)."""

    def __init__(self, routes: Sequence[Route]) -> None:
        self.apps = {method: route.app for route in routes for method in route.methods or ()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.apps[scope["method"]](scope, receive, send)


def one_route_per_path(routes: Sequence[BaseRoute]) -> list[BaseRoute]:
    """The routes with those of a path merged into one that has all their methods, where the first one was."""
    paths: dict[str, list[Route]] = {}
    order: list[BaseRoute | str] = []
    for route in routes:
        if isinstance(route, Route) and route.methods:
            if route.path not in paths:
                paths[route.path] = []
                order.append(route.path)
            paths[route.path].append(route)
        else:
            order.append(route)
    merged: list[BaseRoute] = []
    for entry in order:
        if not isinstance(entry, str):
            merged.append(entry)
            continue
        group = paths[entry]
        if len(group) == 1:
            merged.append(group[0])
            continue
        methods = [method for route in group for method in route.methods or () if method != "HEAD"]
        merged.append(Route(entry, _ByMethod(group), methods=methods, name=group[0].name))
    return merged


def json_api(routes: Sequence[BaseRoute], *, middleware: Sequence[Middleware] = (), **kwargs: Any) -> Starlette:
    app = Starlette(
        routes=one_route_per_path(routes),
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[Middleware(CollapseSlashes), *middleware],
        **kwargs,
    )
    app.router.redirect_slashes = False
    return app
