"""moto as an in-process HTTP endpoint on loopback, one request at a time.

moto's backends are not thread-safe, and a real DynamoDB applies each request atomically. Serialising requests
through one lock gives the same guarantee while clients still race each other across requests, which is what
the concurrency tests need.
"""

from __future__ import annotations

import threading
from typing import Any

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import BaseWSGIServer, make_server


class _Serialized:
    """DynamoDB requests one at a time (each is atomic in AWS). Other services are not locked: a Lambda invoke
    dispatched in-process runs a handler that itself calls DynamoDB through this same server."""

    def __init__(self, app: Any) -> None:
        self._app = app
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if not environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB"):
            return self._app(environ, start_response)
        with self._lock:
            # Materialise the body inside the lock: the backend work happens while it is produced.
            return list(self._app(environ, start_response))


RUNNING: dict[str, MotoServer] = {}  # url -> in-process server


class MotoServer:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        app = _Serialized(DomainDispatcherApplication(create_backend_app))
        self._server: BaseWSGIServer = make_server(host, port, app, threaded=True, request_handler=MotoRequestHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="moto", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> MotoServer:
        self._thread.start()
        RUNNING[self.url] = self
        return self

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def stop(self) -> None:
        RUNNING.pop(self.url, None)
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
