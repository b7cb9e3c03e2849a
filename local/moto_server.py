"""moto as an HTTP endpoint on loopback, one request at a time: in-process (``MotoServer``), or in a child process
(``MotoProcess``, ``python -m local.moto_server --port N``).

moto's backends are not thread-safe, and a real DynamoDB applies each request atomically. Serialising requests
through one lock gives the same guarantee while clients still race each other across requests, which is what
the concurrency tests need.
"""

from __future__ import annotations

import argparse
import logging
import select
import signal
import subprocess
import sys
import threading
from typing import Any

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import BaseWSGIServer, make_server

from local.template import ROOT  # the child imports ``local`` from here


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


class MotoProcess:
    """``python -m local.moto_server`` as a child process: DynamoDB's stand-in off the caller's interpreter.

    The benchmarks time the app against its backends; in AWS, DynamoDB's work costs the function no CPU. In the
    app's process, moto's work would hold the GIL the app needs (a transaction deep-copies the table once per
    item), and that time would be counted as the app's."""

    def __init__(self, env: dict[str, str] | None = None, start_timeout: float = 30.0) -> None:
        self._env = env
        self._timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._drain: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MotoProcess:
        # The child binds a port of its own choosing and prints it: no free port is picked here for another
        # process to take in between.
        argv = [sys.executable, "-m", "local.moto_server", "--port", "0"]
        self._proc = subprocess.Popen(argv, cwd=ROOT, env=self._env, stdout=subprocess.PIPE)  # noqa: S603
        try:
            self.port = self._read_port()
        except BaseException:
            self.stop()
            raise
        return self

    def _read_port(self) -> int:
        assert self._proc is not None
        out = self._proc.stdout
        assert out is not None
        ready, _, _ = select.select([out], [], [], self._timeout)
        if not ready:
            raise RuntimeError(f"moto printed no port within {self._timeout} s")
        line = out.readline()
        if not line.strip().isdigit():  # its stdout ended: it is exiting
            raise RuntimeError(f"moto exited with {self._proc.wait(timeout=10)} before serving")
        # Whatever it prints later is read and dropped: a full pipe would block the child.
        self._drain = threading.Thread(target=out.read, name="moto-stdout", daemon=True)
        self._drain.start()
        return int(line)

    def stop(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._drain is not None:
            self._drain.join(timeout=5)  # the child is gone: its stdout is at its end
        if self._proc.stdout is not None:
            self._proc.stdout.close()

    def __enter__(self) -> MotoProcess:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    """Serve on ``--port`` (0: a free one) until SIGTERM or SIGINT; the port is printed once listening."""
    parser = argparse.ArgumentParser(prog="python -m local.moto_server", description=main.__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one access-log line per request otherwise
    done = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: done.set())
    server = MotoServer(host=args.host, port=args.port).start()
    print(server.port, flush=True)
    try:
        done.wait()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
