"""Fixed-reply HTTP/1.1 server used by the client benchmarks.

A bare :class:`asyncio.Protocol` with :class:`httptools.HttpRequestParser`: it
answers every request with the same small JSON body (like a cloud-function
reply), keeps connections alive, copes with pipelined requests and counts the
connections it accepts.  ``GET /stats`` returns the counters as JSON::

    {"connections": 12, "open": 3, "requests": 4096, "cpu": 1.23}

``connections`` is the number of connections accepted so far, ``open`` the
number currently open, ``requests`` the number of requests answered (``/stats``
excluded) and ``cpu`` this process's CPU seconds (``time.process_time()``).

Run it as a script::

    python benchmarks/_server.py --port 0 --ready-file PATH

(``--port 0`` picks a free port; the chosen port is written to ``PATH`` once
the socket listens), or import it and ``await FixedReplyServer().start()``.
SIGTERM and SIGINT stop it cleanly with exit status 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path

import httptools

REPLY_BODY = b'{"code": 0, "data": "hello allen", "error": {}}'


def _response(status: bytes, body: bytes, *, keep_alive: bool) -> bytes:
    connection = b"keep-alive" if keep_alive else b"close"
    head = (
        b"HTTP/1.1 " + status + b"\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n"
        b"Connection: " + connection + b"\r\n"
        b"\r\n"
    )
    return head + body


REPLY_KEEP_ALIVE = _response(b"200 OK", REPLY_BODY, keep_alive=True)
REPLY_CLOSE = _response(b"200 OK", REPLY_BODY, keep_alive=False)
BAD_REQUEST = _response(b"400 Bad Request", b'{"error": "bad request"}', keep_alive=False)


class Stats:
    """Counters shared by every connection of one server."""

    __slots__ = ("connections", "open", "requests")

    def __init__(self) -> None:
        self.connections = 0
        self.open = 0
        self.requests = 0

    def as_json(self) -> bytes:
        return json.dumps(
            {
                "connections": self.connections,
                "open": self.open,
                "requests": self.requests,
                "cpu": time.process_time(),
            }
        ).encode()


class FixedReplyProtocol(asyncio.Protocol):
    """One HTTP/1.1 connection: parse requests, answer each with the fixed reply."""

    def __init__(self, stats: Stats, live: set[FixedReplyProtocol]) -> None:
        self._stats = stats
        self._live = live
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._closing = False

    # -- asyncio.Protocol ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._stats.connections += 1
        self._stats.open += 1
        self._live.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stats.open -= 1
        self._live.discard(self)
        self._transport = None
        self._closing = True

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            self._reply(BAD_REQUEST, close=True)

    def pause_writing(self) -> None:
        # The peer is not reading its replies (e.g. a pipelining flood): stop
        # reading requests until the write buffer drains.
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None and not self._closing:
            self._transport.resume_reading()

    # -- httptools callbacks ------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_message_complete(self) -> None:
        # Called once per request, in order, even when several pipelined
        # requests arrive in one chunk: writing synchronously keeps replies
        # in request order.
        if self._closing:
            return
        keep_alive = self._parser.should_keep_alive()
        if self._url == b"/stats" and self._parser.get_method() == b"GET":
            body = self._stats.as_json()
            self._reply(_response(b"200 OK", body, keep_alive=keep_alive), close=not keep_alive)
            return
        self._stats.requests += 1
        if keep_alive:
            self._reply(REPLY_KEEP_ALIVE, close=False)
        else:
            self._reply(REPLY_CLOSE, close=True)

    # -- helpers --------------------------------------------------------------

    def _reply(self, payload: bytes, *, close: bool) -> None:
        transport = self._transport
        if transport is None:
            return
        transport.write(payload)
        if close:
            self._closing = True
            transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()


class FixedReplyServer:
    """The listening socket plus its counters; usable from any asyncio program."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, backlog: int = 4096) -> None:
        self.host = host
        self.requested_port = port
        self.backlog = backlog
        self.stats = Stats()
        self._live: set[FixedReplyProtocol] = set()
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("server not started")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> FixedReplyServer:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: FixedReplyProtocol(self.stats, self._live),
            self.host,
            self.requested_port,
            backlog=self.backlog,
            reuse_address=True,
        )
        return self

    async def close(self) -> None:
        server = self._server
        if server is None:
            return
        self._server = None
        server.close()
        for proto in list(self._live):
            proto.abort()
        # Python 3.12+ waits here for the connections to go; bound it anyway.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(server.wait_closed(), timeout=5)

    async def __aenter__(self) -> FixedReplyServer:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def raise_fd_limit() -> None:
    """Lift the soft open-files limit to the hard one (thousands of sockets)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Linux/macOS
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > 1 << 20:
        hard = 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= hard:
        return
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _write_ready_file(path: Path, port: int) -> None:
    # Write-then-rename, so a reader never sees a half-written port number.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{port}\n")
    os.replace(tmp, path)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def serve(
    host: str, port: int, ready_file: Path | None = None, parent_pid: int | None = None
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with FixedReplyServer(host, port) as server:
        if ready_file is not None:
            _write_ready_file(ready_file, server.port)
        else:
            print(f"listening on http://{host}:{server.port}", flush=True)
        while not stop.is_set():
            # Wake up once a second to notice a dead parent (e.g. SIGKILLed
            # benchmark), so the server never outlives it for long.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)
            if parent_pid is not None and not _pid_alive(parent_pid):
                break


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--ready-file", type=Path, help="write the chosen port here")
    parser.add_argument("--parent-pid", type=int, help="exit when this process is gone")
    args = parser.parse_args(argv)
    raise_fd_limit()
    asyncio.run(serve(args.host, args.port, args.ready_file, args.parent_pid))
    return 0


if __name__ == "__main__":
    sys.exit(main())
