"""Small loopback servers that misbehave on purpose, for what the emulator cannot produce.

Each runs inside the test's own task group (asyncio or trio alike) and records what it saw.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
from anyio.abc import SocketStream
from attrs import define, field

#: Answers one request; returning True keeps the connection for the next request.
Handler = Callable[[SocketStream, bytes], Awaitable[bool | None]]


@define
class Served:
    """A running test server: its base URL and what it saw."""

    url: str
    connections: int = 0
    requests: list[bytes] = field(factory=list)
    #: (anyio.current_time(), X-Request-Id) of every request, in arrival order.
    arrivals: list[tuple[float, str]] = field(factory=list)
    #: Set when the first request has been read completely.
    first_request: anyio.Event = field(factory=anyio.Event)

    def times_seen(self, rid: str) -> int:
        """How many requests carried this X-Request-Id."""
        return sum(1 for _, seen in self.arrivals if seen == rid)


async def read_request(stream: SocketStream) -> bytes:
    """Read one HTTP request (headers and a Content-Length body); b"" if the peer closed."""
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            chunk = await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return b""
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        body += await stream.receive()
    return head + b"\r\n\r\n" + body


def request_id(request: bytes) -> str:
    """The X-Request-Id header of a request ("" if it has none)."""
    for line in request.split(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"x-request-id":
            return value.strip().decode()
    return ""


def response(status: int, body: bytes, *headers: str, reason: str = "X") -> bytes:
    """A complete HTTP/1.1 response with Content-Length."""
    lines = [f"HTTP/1.1 {status} {reason}", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def free_port() -> int:
    """A loopback port that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def serve(handler: Handler) -> AsyncIterator[Served]:
    """Serve ``handler(stream, request)`` on loopback until the block ends."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    served = Served(f"http://127.0.0.1:{port}")

    async def on_connection(stream: SocketStream) -> None:
        served.connections += 1
        async with stream:
            keep_alive = True
            while keep_alive:
                request = await read_request(stream)
                if not request:
                    return
                served.requests.append(request)
                served.arrivals.append((anyio.current_time(), request_id(request)))
                served.first_request.set()
                keep_alive = bool(await handler(stream, request))

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, on_connection)
        try:
            yield served
        finally:
            tg.cancel_scope.cancel()


def canned(reply: bytes) -> Handler:
    """Answer every request on the connection with the same bytes."""

    async def handler(stream: SocketStream, request: bytes) -> bool:
        await stream.send(reply)
        return True

    return handler


async def never_answer(stream: SocketStream, request: bytes) -> None:
    """Read the request, then hold the connection open without a word."""
    await anyio.sleep_forever()


async def trickle(stream: SocketStream, request: bytes) -> None:
    """Send a valid reply one byte every 0.3 s, so no single read ever waits long."""
    for byte in response(200, b'{"code": 0, "data": "' + b"x" * 200 + b'", "error": {}}'):
        await stream.send(bytes([byte]))
        await anyio.sleep(0.3)


async def hang_up(stream: SocketStream, request: bytes) -> None:
    """Read the request, then close the connection without replying."""


async def half_reply(stream: SocketStream, request: bytes) -> None:
    """Send the headers and part of the body, then close."""
    await stream.send(response(200, b'{"code": 0, "data": "hello allen", "error": {}}')[:-10])


#: Steps of `scripted` other than reply bytes.
HANG_UP = b"<hang up>"
SILENCE = b"<silence>"


def scripted(*steps: bytes) -> Handler:
    """Answer the n-th request (over all connections) with the n-th step, the last step
    repeating: reply bytes (the connection stays open), HANG_UP (close without a reply) or
    SILENCE (never answer)."""
    served = 0

    async def handler(stream: SocketStream, request: bytes) -> bool:
        nonlocal served
        step = steps[min(served, len(steps) - 1)]
        served += 1
        if step == HANG_UP:
            return False
        if step == SILENCE:
            await anyio.sleep_forever()
        await stream.send(step)
        return True

    return handler
