"""ChatFunction's server (``run.sh``): uvicorn serving ``module:app`` on 127.0.0.1:PORT for the Lambda Web Adapter.

``python -m uvicorn`` would import uvicorn's command line — click, and the reload and multi-process supervisors — to
parse options that are fixed here: about 50 ms of every cold start. uvicorn's package ``__init__`` imports that
command line, so the package is entered without running it: only ``uvicorn.config``, ``uvicorn.server`` and what
they import load (the protocols and the lifespan, as with the CLI). ``tests/sam_build`` runs the built ``run.sh``
through the adapter's readiness check and a streamed turn; ``tests/unit/test_imports.py`` holds click out.

``server`` also imports the app (uvicorn's ``Config.load``, which ``Server.serve`` would otherwise run) and uvicorn
itself with the garbage collector paused (``chatcore.coldstart``).
"""

from __future__ import annotations

import importlib.util
import sys
import types
from typing import TYPE_CHECKING, Any

from chatcore.coldstart import collector_paused

if TYPE_CHECKING:
    from uvicorn import Server


def _enter_uvicorn() -> types.ModuleType:
    """The ``uvicorn`` package, its ``__init__`` not run unless something imported it before."""
    package = sys.modules.get("uvicorn")
    if package is None:
        spec = importlib.util.find_spec("uvicorn")
        if spec is None or spec.submodule_search_locations is None:
            raise ModuleNotFoundError("uvicorn is not installed", name="uvicorn")
        package = types.ModuleType("uvicorn")
        package.__spec__ = spec
        package.__path__ = list(spec.submodule_search_locations)
        package.__file__ = spec.origin
        sys.modules["uvicorn"] = package
    from uvicorn.config import Config

    package.Config = Config  # type: ignore[attr-defined]  # uvicorn.lifespan.on imports it from the package
    return package


def server(target: str | Any, *, port: int) -> Server:
    """A uvicorn server of ``target`` (``"module:attribute"`` or an ASGI app) on 127.0.0.1:``port``, configured as
    the Web Adapter needs it: no access log (the app logs each request), keep-alive longer than the adapter's. The
    target is imported here, before the server starts."""
    with collector_paused():
        _enter_uvicorn()
        from uvicorn.config import Config
        from uvicorn.server import Server

        config = Config(target, host="127.0.0.1", port=port, access_log=False, timeout_keep_alive=60)
        config.load()
    return Server(config)


def main(argv: list[str] | None = None) -> None:
    """``python -m chatcore.web.serve --port PORT module:app``"""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3 or args[0] != "--port" or not args[1].isdecimal() or ":" not in args[2]:
        raise SystemExit("usage: python -m chatcore.web.serve --port PORT module:app")
    server(args[2], port=int(args[1])).run()


if __name__ == "__main__":
    main()
