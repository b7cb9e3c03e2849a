"""The loopback servers of the local stack, the tests and the benchmarks accept connections as uvicorn does in
Lambda (``chatcore.web.serve`` binds through ``loop.create_server``): with TCP_NODELAY. Without it a small
response's second write waited for the client's delayed ACK, ~40 ms per request, which no deployment has."""

from __future__ import annotations

import asyncio
import socket

import pytest
from starlette.applications import Starlette

from local.offline_llm import OfflineLLM
from local.server import ServerThread, tcp_listener

pytestmark = pytest.mark.anyio


async def _nodelay_of_accepted(listener: socket.socket) -> int:
    seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.set_result(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    server = await asyncio.start_server(accepted, sock=listener)
    async with server:
        host, port = listener.getsockname()[:2]
        _, writer = await asyncio.open_connection(host, port)
        try:
            return await asyncio.wait_for(seen, timeout=5)
        finally:
            writer.close()


async def test_a_tcp_listener_accepts_with_nodelay_where_a_plain_socket_does_not():
    assert await _nodelay_of_accepted(tcp_listener("127.0.0.1", 0)) != 0
    plain = socket.socket()  # what the servers used: asyncio leaves Nagle on for it
    plain.bind(("127.0.0.1", 0))
    assert await _nodelay_of_accepted(plain) == 0


def test_the_app_server_and_the_offline_model_listen_on_tcp_listeners():
    app_server = ServerThread(Starlette()).start()
    llm = OfflineLLM().start()
    try:
        for listener in (app_server._sock, llm._socket):
            assert listener is not None and listener.proto == socket.IPPROTO_TCP
    finally:
        llm.stop()
        app_server.stop()
