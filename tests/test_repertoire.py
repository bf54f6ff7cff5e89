"""Every misbehaviour of the fault server ends in a typed BaaSError within deadline + 0.5 s."""

from __future__ import annotations

import socket
import struct

import anyio
import pytest
from anyio.abc import SocketAttribute

from baas_async import AsyncBaaS, BaaSError

from ._servers import (
    HANG_UP,
    SILENCE,
    free_port,
    half_reply,
    response,
    scripted,
    serve,
    trickle,
)

pytestmark = pytest.mark.anyio

DEADLINE = 1.0


async def reset_at_once(stream, request: bytes) -> bool:
    """Answer with a TCP reset (SO_LINGER 0, then close)."""
    sock = stream.extra(SocketAttribute.raw_socket)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    return False


async def stall_after_headers(stream, request: bytes) -> bool:
    """Send the status line and headers, then nothing."""
    await stream.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
    await anyio.sleep_forever()
    return False  # pragma: no cover


def status(code: int, *headers: str) -> bytes:
    """A platform-style error reply."""
    return response(code, b'{"status": "error", "error_msg": "x"}', *headers)


REPERTOIRE = {
    "hang": scripted(SILENCE),
    "reset-after-request": reset_at_once,
    "close-after-request": scripted(HANG_UP),
    "stall-after-headers": stall_after_headers,
    "trickle": trickle,
    "truncate": half_reply,
    "garbage": scripted(b"\x16\x03\x01 not http at all\r\n\r\n"),
    "html-502": scripted(response(502, b"<html>Bad Gateway</html>", "Content-Type: text/html")),
    "huge-body": scripted(b"HTTP/1.1 200 OK\r\nContent-Length: 999999999999\r\n\r\n"),
    "malformed-json": scripted(response(200, b'{"code": 0,')),
    **{f"{code}": scripted(status(code)) for code in (400, 401, 402, 403, 404, 500, 502, 504)},
    **{f"{code}+retry-after": scripted(status(code, "Retry-After: 1")) for code in (429, 503)},
    **{f"{code}-no-retry-after": scripted(status(code)) for code in (429, 503)},
}


@pytest.mark.parametrize("name", sorted(REPERTOIRE))
async def test_every_fault_is_a_typed_error_within_the_deadline(name: str) -> None:
    """Whatever the server does, the call ends in a BaaSError by its deadline + 0.5 s."""
    async with (
        serve(REPERTOIRE[name]) as server,
        AsyncBaaS("demo", base_url=server.url, max_response_size=1 << 20) as baas,
    ):
        with anyio.fail_after(DEADLINE + 0.5), pytest.raises(BaaSError) as info:
            await baas.invoke("f", timeout=DEADLINE)
    assert info.value.function_name == "f"
    assert info.value.elapsed is not None


async def test_refused_connection_is_a_typed_error_within_the_deadline() -> None:
    """Nothing listening: a BaaSError (after the safe retries) within the deadline."""
    async with AsyncBaaS("demo", base_url=f"http://127.0.0.1:{free_port()}") as baas:
        with anyio.fail_after(DEADLINE + 0.5), pytest.raises(BaaSError):
            await baas.invoke("f", timeout=DEADLINE)


async def test_reset_before_reading_the_request_is_a_typed_error() -> None:
    """A server that resets each connection as soon as it is accepted: a BaaSError."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(SocketAttribute.local_port)

    async def reset(stream) -> None:
        await reset_at_once(stream, b"")
        await stream.aclose()

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, reset)
        async with AsyncBaaS("demo", base_url=f"http://127.0.0.1:{port}") as baas:
            with anyio.fail_after(DEADLINE + 0.5), pytest.raises(BaaSError):
                await baas.invoke("f", timeout=DEADLINE)
        tg.cancel_scope.cancel()
