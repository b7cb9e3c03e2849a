"""The local web chat page: ``GET /`` (``local/web/index.html``) and ``/static/...`` (the page's CSS and ES modules).

Plain HTML, CSS and JavaScript served as they are: no build step, no CDN. Dev-only, like the rest of ``local/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

WEB_DIR = Path(__file__).parent / "web"


class _RevalidatedFiles(StaticFiles):
    """Static files the browser revalidates on every load (ETag), so an edited file is picked up at once."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["cache-control"] = "no-cache"
        return response


async def _index(request: Request) -> Response:
    return FileResponse(WEB_DIR / "index.html", headers={"cache-control": "no-store"})


def web_routes() -> list[BaseRoute]:
    return [
        Route("/", _index, methods=["GET"]),
        Mount("/static", app=_RevalidatedFiles(directory=WEB_DIR), name="static"),
    ]
