"""Moving bytes: the two ways a call reaches the platform.

* ``NativeSender`` — the default: a keep-alive connection pool with the llhttp parser
  (``httptools``), built on asyncio protocols under asyncio and on anyio streams under
  trio. It does only what an invocation needs (one request, one response, HTTP/1.1, TLS)
  and so costs a fraction of a general client's CPU per call;
  ``benchmarks/transports.py`` holds the measurement behind the choice.
* ``HttpxSender`` — a caller's ``httpx.AsyncClient`` or httpx transport (e.g.
  ``httpx.ASGITransport`` to call the emulator in-process).

Both take a request as (path, extra headers, body) and return a fully read ``RawResponse``;
both translate their library's errors into baas_async exceptions here and nowhere else.
Deadlines are not applied here: the caller wraps the whole call in one ``anyio.fail_after``.
"""

from __future__ import annotations

import asyncio
import select
import socket
import ssl
import time
from collections import deque
from collections.abc import Mapping
from contextlib import aclosing
from typing import Any, NamedTuple, Protocol
from urllib.parse import urlsplit

import anyio
import anyio.abc
import httptools
import httpx
import sniffio

from ._exceptions import (
    ClientClosed,
    ConnectError,
    ConnectionLost,
    InvocationTimeout,
    ResponseTooLarge,
)

__all__ = ["Call", "HttpxSender", "NativeSender", "RawResponse", "Sender", "split_base_url"]


class RawResponse(NamedTuple):
    """A complete HTTP reply; header names are lower-case."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class Call:
    """What a sender needs to know about the call it serves, and what it reports back.

    ``sent`` is ``False`` until request bytes have left for the server, then ``True``;
    ``None`` means the transport cannot tell (a caller's httpx transport), which counts as
    "may have run".
    """

    __slots__ = (
        "attempts",
        "earlier_may_have_run",
        "function_name",
        "request_id",
        "sent",
        "started",
        "timeout",
        "traced",
    )

    def __init__(
        self, function_name: str | None, request_id: str, timeout: float | None, *, traced: bool
    ) -> None:
        self.function_name = function_name
        self.request_id = request_id
        self.timeout = timeout
        self.started = time.monotonic()
        self.traced = traced
        self.sent: bool | None = False if traced else None
        self.attempts = 1
        self.earlier_may_have_run = False

    def elapsed(self) -> float:
        """Seconds since the call started."""
        return time.monotonic() - self.started

    def remaining(self) -> float | None:
        """Seconds left before the deadline (``None``: no deadline)."""
        return None if self.timeout is None else self.timeout - self.elapsed()

    def next_attempt(self, *, previous_may_have_run: bool) -> None:
        """Start another attempt: nothing of it has been sent yet; whether the one before
        may have run the function is kept."""
        self.earlier_may_have_run = self.earlier_may_have_run or previous_may_have_run
        self.attempts += 1
        self.sent = False if self.traced else None

    @property
    def may_have_run(self) -> bool:
        """Whether any attempt may have run the function: this one was (partly) sent, or an
        earlier one may have run it."""
        return self.earlier_may_have_run or self.sent is not False


class Sender(Protocol):
    """One way of sending a request and reading its whole reply."""

    traced: bool

    async def send(
        self, call: Call, method: str, path: str, headers: list[tuple[str, str]], body: bytes
    ) -> RawResponse:
        """Send one request and return its complete reply."""
        ...

    async def aclose(self) -> None:
        """Close every connection this sender opened."""
        ...


def split_base_url(base_url: str) -> tuple[str, str, int, str]:
    """``(scheme, host, port, path prefix)`` of an ``http``/``https`` base URL, checked."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"base_url must be an http:// or https:// URL, got {base_url!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"base_url must not have a query or fragment, got {base_url!r}")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise ValueError(f"base_url has an invalid port: {base_url!r}") from exc
    try:
        parts.hostname.encode("idna")
    except UnicodeError as exc:
        raise ValueError(f"base_url has an invalid host name: {base_url!r}") from exc
    return parts.scheme, parts.hostname, port, parts.path.rstrip("/")


def _closed_error(call: Call) -> ClientClosed:
    return ClientClosed(
        "the AsyncBaaS client was closed while the call was in flight",
        function_name=call.function_name,
        may_have_run=call.may_have_run,
        elapsed=call.elapsed(),
    )


def _subject(call: Call) -> str:
    if call.function_name is None:
        return "token exchange"
    return f"cloud function {call.function_name!r}"


def _connect_error(call: Call, detail: str) -> ConnectError:
    return ConnectError(
        f"{_subject(call)}: could not connect{detail}",
        function_name=call.function_name,
        may_have_run=False,
        elapsed=call.elapsed(),
    )


def _connection_lost(call: Call, detail: str) -> ConnectionLost:
    return ConnectionLost(
        f"{_subject(call)}: {detail}",
        function_name=call.function_name,
        may_have_run=call.may_have_run,
        elapsed=call.elapsed(),
    )


def _too_large(call: Call, limit: int) -> ResponseTooLarge:
    return ResponseTooLarge(
        f"{_subject(call)}: the reply is larger than the {limit}-byte limit",
        function_name=call.function_name,
        elapsed=call.elapsed(),
        limit=limit,
    )


# -- the native transports ----------------------------------------------------------------------


class _Failure(Exception):
    """Raised inside the native transports; translated in ``NativeSender.send``."""


class _TooLarge(_Failure):
    """The reply is larger than the size limit."""


class _Reply:
    """Collects one HTTP response from the llhttp parser's callbacks.

    One instance lives as long as its connection, since the parser keeps state between
    responses of a keep-alive connection.
    """

    __slots__ = (
        "body",
        "complete",
        "headers",
        "headers_done",
        "keep_alive",
        "limit",
        "parser",
        "size",
        "status",
        "too_large",
    )

    def __init__(self, limit: int | None) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.limit = limit
        self.reset()

    def reset(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.headers_done = False
        self.complete = False
        self.keep_alive = True
        self.size = 0
        self.too_large = False

    def feed(self, data: bytes) -> None:
        """Parse received bytes; raise ``_Failure`` when they are not an HTTP reply, and
        ``_TooLarge`` as soon as the reply is known to pass the size limit."""
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            if self.status == 101:  # llhttp pauses on an upgrade
                raise _Failure("the server switched protocols instead of replying") from exc
            if self.complete:
                # Garbage after a complete reply: keep the reply, never reuse the connection.
                self.keep_alive = False
                return
            raise _Failure(f"malformed HTTP reply: {exc!r}") from exc
        if self.too_large:
            raise _TooLarge(f"the reply is larger than the {self.limit}-byte limit")
        if self.complete and self.status == 101:
            raise _Failure("the server switched protocols instead of replying")

    def end_of_stream(self, exc: BaseException | None = None) -> bool:
        """The peer closed (``exc`` is ``None`` for an orderly close): whether that
        completes a body delimited by the close. A reset never completes anything."""
        if (
            exc is None
            and self.headers_done
            and not ("content-length" in self.headers or "transfer-encoding" in self.headers)
        ):
            self.keep_alive = False
            self.complete = True
        return self.complete

    def result(self) -> RawResponse:
        return RawResponse(self.status, self.headers, b"".join(self.body))

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()
        self.headers_done = True
        length = self.headers.get("content-length", "")
        if self.limit is not None and length.isdigit() and int(length) > self.limit:
            self.too_large = True  # refused before reading any of the body

    def on_body(self, body: bytes) -> None:
        if self.too_large:
            return
        self.size += len(body)
        if self.limit is not None and self.size > self.limit:
            self.too_large = True
            return
        self.body.append(body)

    def on_message_complete(self) -> None:
        if 100 <= self.status < 200 and self.status != 101:
            # An interim reply (100 Continue, 103 Early Hints): the real one follows.
            self.status, self.headers, self.body, self.headers_done = 0, {}, [], False
            return
        self.complete = True


def _incomplete(exc: BaseException | None) -> _Failure:
    # Even on a reused connection with no byte of reply yet, the server may have read the
    # request and run the function before closing: that is "may have run", never "stale"
    # (RFC 9112 §9.3.1). Connections the server closed while idle are caught before reuse.
    reason = f" ({exc})" if exc else ""
    return _Failure(f"the server closed the connection before the reply was complete{reason}")


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection as an asyncio protocol, driven by one call at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int | None) -> None:
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._reply = _Reply(limit)
        self._waiter: asyncio.Future[None] | None = None
        self._fd = -1
        self.closed = False
        self.discarded = False
        self.idle_since = 0.0

    @property
    def keep_alive(self) -> bool:
        return self._reply.keep_alive

    def looks_alive(self) -> bool:
        """Whether an idle connection is still open and quiet.

        The server may have closed it a moment ago, before the event loop processed that;
        any readable byte (a close, or data nobody asked for) rules it out. One ``poll``
        with a zero timeout, as urllib3 does before reusing a connection (``poll``, not
        ``select``, which fails for descriptors above 1023).
        """
        if self.closed:
            return False
        if self._fd < 0:
            return True
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        try:
            return not poller.poll(0)
        except OSError:
            return False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            self._fd = sock.fileno()

    def data_received(self, data: bytes) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            # Bytes nobody asked for: the connection's state is unknown, never reuse it.
            self.abort()
            return
        try:
            self._reply.feed(data)
        except _Failure as exc:
            self.abort()
            waiter.set_exception(exc)
            return
        if self._reply.complete:
            waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._reply.end_of_stream(exc):
            waiter.set_result(None)
        else:
            waiter.set_exception(_incomplete(exc))

    def abort(self) -> None:
        """Close at once, dropping unsent data: used whenever the state is uncertain."""
        self.closed = True
        if self._transport is not None:
            self._transport.abort()

    async def roundtrip(self, call: Call, data: bytes) -> RawResponse:
        assert self._transport is not None
        if self.closed:  # asyncio would drop the write silently and never answer
            raise _Failure("the connection closed before the request was sent")
        self._reply.reset()
        waiter = self._waiter = self._loop.create_future()
        try:
            self._transport.write(data)
            call.sent = True
            await waiter
        finally:
            self._waiter = None
        return self._reply.result()


class _ProtocolPool:
    """A bounded pool of keep-alive asyncio-protocol connections to one origin.

    Waiters are served first-in first-out. A waiter is handed either an idle connection or,
    when a connection was dropped, its *slot* (``None``) to open a new one with, so the
    number of connections never exceeds ``max_connections``. A waiter cancelled after being
    handed something gives it back: cancelled waiters never leak slots.
    """

    def __init__(self, origin: _Origin) -> None:
        self._loop = asyncio.get_running_loop()
        self._origin = origin
        self._slots_taken = 0
        self._idle: list[_Connection] = []
        self._busy: set[_Connection] = set()
        self._waiters: deque[asyncio.Future[_Connection | None]] = deque()
        self.closed = False

    async def exchange(self, call: Call, data: bytes) -> RawResponse:
        """Send ``data`` on a pooled connection and return the complete reply."""
        if asyncio.get_running_loop() is not self._loop:
            raise RuntimeError(
                "this AsyncBaaS is bound to the event loop it was first used in; create one "
                "AsyncBaaS per event loop"
            )
        conn = await self._acquire()
        try:
            response = await conn.roundtrip(call, data)
        except BaseException:
            # An error or a cancellation mid-exchange: the connection's state is unknown.
            self._discard(conn)
            raise
        self._release(conn)
        return response

    async def _acquire(self) -> _Connection:
        idle, expiry = self._idle, self._origin.keepalive_expiry
        while idle:
            conn = idle.pop()
            fresh = expiry is None or time.monotonic() - conn.idle_since < expiry
            if fresh and conn.looks_alive():
                self._busy.add(conn)
                return conn
            self._drop(conn)
        if self.closed:
            raise _Failure("pool closed")
        if self._slots_taken < self._origin.max_connections:
            self._slots_taken += 1
            return await self._open()
        waiter: asyncio.Future[_Connection | None] = self._loop.create_future()
        self._waiters.append(waiter)
        try:
            conn_or_slot = await waiter
        except BaseException:
            # Cancelled (or the pool closed): give back whatever we were handed meanwhile.
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                handed = waiter.result()
                if handed is None:
                    self._free_slot()
                else:
                    self._release(handed)
            raise
        if conn_or_slot is None:
            return await self._open()
        conn = conn_or_slot
        if self.closed:
            self._drop(conn)
            raise _Failure("pool closed")
        if not conn.looks_alive():
            # It closed between being handed over and this task resuming: replace it in
            # the same slot.
            conn.discarded = True
            conn.abort()
            return await self._open()
        self._busy.add(conn)
        return conn

    async def _open(self) -> _Connection:
        """Open a connection in a slot already taken; free the slot if that fails."""
        origin = self._origin
        try:
            _, conn = await self._loop.create_connection(
                lambda: _Connection(self._loop, origin.max_response_size),
                origin.host,
                origin.port,
                ssl=origin.ssl_context,
                server_hostname=origin.host if origin.ssl_context else None,
            )
        except BaseException:
            self._free_slot()
            raise
        if self.closed:  # close() ran while we were connecting
            self._drop(conn)
            raise _Failure("pool closed")
        self._busy.add(conn)
        return conn

    def _release(self, conn: _Connection) -> None:
        """Take a connection back after a complete exchange; reuse it if it can be."""
        self._busy.discard(conn)
        if conn.closed or not conn.keep_alive or self.closed:
            self._drop(conn)
            return
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        if len(self._idle) >= self._origin.max_idle:
            self._drop(conn)
            return
        conn.idle_since = time.monotonic()
        self._idle.append(conn)

    def _discard(self, conn: _Connection) -> None:
        self._busy.discard(conn)
        self._drop(conn)

    def _drop(self, conn: _Connection) -> None:
        """Close a connection and free its slot, once."""
        if conn.discarded:
            return
        conn.discarded = True
        conn.abort()
        self._free_slot()

    def _free_slot(self) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes to the waiter
                return
        self._slots_taken -= 1

    async def aclose(self) -> None:
        self.closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            self._drop(conn)
        for conn in self._busy:
            conn.abort()  # the call on it fails, and frees the slot as it does
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(_Failure("pool closed"))

    @property
    def connections(self) -> int:
        return self._slots_taken


class _StreamConnection:
    """One HTTP/1.1 connection over an anyio byte stream (used on trio)."""

    __slots__ = ("idle_since", "reply", "socket", "stream")

    def __init__(self, stream: anyio.abc.ByteStream, limit: int | None) -> None:
        self.stream = stream
        self.reply = _Reply(limit)
        self.idle_since = 0.0
        raw = anyio.abc.SocketAttribute.raw_socket
        self.socket: socket.socket | None = stream.extra(raw, None)  # noqa: S610 (not Django)

    def looks_alive(self) -> bool:
        """Whether the server has not closed the idle connection (a non-blocking peek)."""
        if self.socket is None:
            return True
        try:
            self.socket.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return True  # nothing to read: open and quiet, as an idle connection should be
        except OSError:
            return False
        return False  # end of stream, or bytes nobody asked for: do not reuse

    async def roundtrip(self, call: Call, data: bytes) -> RawResponse:
        reply = self.reply
        reply.reset()
        await self.stream.send(data)
        call.sent = True
        while not reply.complete:
            try:
                chunk = await self.stream.receive()
            except anyio.EndOfStream as exc:
                if reply.end_of_stream():
                    break
                raise _incomplete(None) from exc
            except anyio.BrokenResourceError as exc:
                raise _incomplete(exc) from exc
            reply.feed(chunk)
        return reply.result()


class _StreamPool:
    """A bounded pool of keep-alive connections over anyio streams, for event loops other
    than asyncio. A ``CapacityLimiter`` bounds the connections in use (it is fair, and a
    cancelled waiter takes nothing from it); new connections are opened only when no idle
    one is left, so the total never exceeds the limit.
    """

    def __init__(self, origin: _Origin) -> None:
        self._origin = origin
        self._limiter = anyio.CapacityLimiter(origin.max_connections)
        self._idle: list[_StreamConnection] = []
        self._busy: set[_StreamConnection] = set()
        self.closed = False

    async def exchange(self, call: Call, data: bytes) -> RawResponse:
        async with self._limiter:
            conn = await self._checkout()
            self._busy.add(conn)
            try:
                response = await conn.roundtrip(call, data)
            except BaseException:
                self._busy.discard(conn)
                await anyio.aclose_forcefully(conn.stream)
                raise
            self._busy.discard(conn)
            reusable = conn.reply.keep_alive and not self.closed
            if reusable and len(self._idle) < self._origin.max_idle:
                conn.idle_since = time.monotonic()
                self._idle.append(conn)
            else:
                await anyio.aclose_forcefully(conn.stream)
            return response

    async def _checkout(self) -> _StreamConnection:
        """An idle connection that is still usable, or a new one."""
        expiry = self._origin.keepalive_expiry
        while self._idle:
            conn = self._idle.pop()
            fresh = expiry is None or time.monotonic() - conn.idle_since < expiry
            if fresh and conn.looks_alive():
                return conn
            await anyio.aclose_forcefully(conn.stream)
        return await self._open()

    async def _open(self) -> _StreamConnection:
        origin = self._origin
        if self.closed:
            raise _Failure("pool closed")
        stream: anyio.abc.ByteStream
        if origin.ssl_context is None:
            stream = await anyio.connect_tcp(origin.host, origin.port)
        else:
            stream = await anyio.connect_tcp(
                origin.host,
                origin.port,
                ssl_context=origin.ssl_context,
                tls_standard_compatible=False,
            )
        if self.closed:  # aclose() ran while we were connecting
            await anyio.aclose_forcefully(stream)
            raise _Failure("pool closed")
        return _StreamConnection(stream, origin.max_response_size)

    async def aclose(self) -> None:
        self.closed = True
        for conn in [*self._idle, *self._busy]:
            await anyio.aclose_forcefully(conn.stream)
        self._idle.clear()

    @property
    def connections(self) -> int:
        return len(self._idle) + len(self._busy)


class _Origin(NamedTuple):
    host: str
    port: int
    ssl_context: ssl.SSLContext | None
    max_connections: int
    max_idle: int
    keepalive_expiry: float | None
    max_response_size: int | None


class NativeSender:
    """The default sender: see the module docstring. On asyncio it drives protocols
    directly; on other event loops (trio) it uses anyio streams with the same parser."""

    traced = True

    def __init__(
        self,
        base_url: str,
        static_headers: list[tuple[str, str]],
        limits: httpx.Limits,
        *,
        max_response_size: int | None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        scheme, host, port, self._prefix = split_base_url(base_url)
        default_port = 443 if scheme == "https" else 80
        name = f"[{host}]" if ":" in host else host  # an IPv6 literal
        authority = name if port == default_port else f"{name}:{port}"
        self._head = "".join(
            f"{key}: {value}\r\n" for key, value in [("Host", authority), *static_headers]
        )
        max_connections = limits.max_connections or 100
        max_idle = limits.max_keepalive_connections
        self._origin = _Origin(
            host,
            port,
            (ssl_context or ssl.create_default_context()) if scheme == "https" else None,
            max_connections,
            max_connections if max_idle is None else min(max_connections, max_idle),
            limits.keepalive_expiry,
            max_response_size,
        )
        self._pool: _ProtocolPool | _StreamPool | None = None
        self._closed = False

    async def send(
        self, call: Call, method: str, path: str, headers: list[tuple[str, str]], body: bytes
    ) -> RawResponse:
        """Send one request on a pooled connection and read the whole reply."""
        if self._closed:
            raise _closed_error(call)
        head = "".join(f"{key}: {value}\r\n" for key, value in headers)
        data = (
            f"{method} {self._prefix}{path} HTTP/1.1\r\n{self._head}{head}"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        pool = self._pool
        if pool is None:
            if sniffio.current_async_library() == "asyncio":
                pool = self._pool = _ProtocolPool(self._origin)
            else:
                pool = self._pool = _StreamPool(self._origin)
        try:
            return await pool.exchange(call, data)
        except (
            _Failure,
            OSError,
            anyio.BrokenResourceError,
            anyio.ClosedResourceError,
            anyio.EndOfStream,
        ) as exc:
            raise self._translate(call, exc) from exc

    def _translate(self, call: Call, exc: Exception) -> Exception:
        """Map a failure of the native transports onto the baas_async tree."""
        if self._closed:
            return _closed_error(call)
        if isinstance(exc, _TooLarge):
            return _too_large(call, self._origin.max_response_size or 0)
        why = str(exc) or repr(exc)
        if call.sent is False:
            # Nothing reached the server: however it failed, it failed to connect (a TLS
            # handshake cut short, a reset while sending).
            return _connect_error(call, f" to {self._origin.host}:{self._origin.port}: {why}")
        return _connection_lost(call, why)

    async def aclose(self) -> None:
        """Close every connection; calls in flight fail with :class:`ClientClosed`."""
        self._closed = True
        if self._pool is not None:
            await self._pool.aclose()

    @property
    def connections(self) -> int:
        """Connections open or being opened (for tests and diagnostics)."""
        return 0 if self._pool is None else self._pool.connections


# -- httpx ------------------------------------------------------------------------------------

# The client's own deadline governs; httpx's per-phase timeouts must not cut in first.
_NO_TIMEOUTS = {"connect": None, "read": None, "write": None, "pool": None}


class HttpxSender:
    """Sends through a caller's httpx transport or ``httpx.AsyncClient``, which it never
    closes or changes. Whether a request was sent is known only where the transport reports
    httpcore's trace events; otherwise a failed call counts as "may have run".
    """

    traced = False

    def __init__(
        self,
        base_url: str,
        static_headers: list[tuple[str, str]],
        *,
        client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        max_response_size: int | None = None,
    ) -> None:
        split_base_url(base_url)
        self._limit = max_response_size
        self._base_url = base_url.rstrip("/")
        self._static_headers = static_headers
        self._client = client
        self._transport = transport
        self._closed = False

    async def send(
        self, call: Call, method: str, path: str, headers: list[tuple[str, str]], body: bytes
    ) -> RawResponse:
        """Send one request through httpx and read the whole reply."""

        async def trace(event: str, info: Any) -> None:
            if event.endswith("send_request_headers.started"):
                call.sent = True

        url = self._base_url + path
        all_headers = [*self._static_headers, *headers]
        try:
            if self._client is not None:
                request = self._client.build_request(
                    method, url, headers=all_headers, content=body
                )
                request.extensions["trace"] = trace
                response = await self._client.send(request, stream=True)
            else:
                assert self._transport is not None
                request = httpx.Request(
                    method,
                    url,
                    headers=all_headers,
                    content=body,
                    extensions={"timeout": _NO_TIMEOUTS, "trace": trace},
                )
                response = await self._transport.handle_async_request(request)
            try:
                content = await self._read(call, response)
            finally:
                await response.aclose()
        except httpx.HTTPError as exc:
            raise self._translate(call, exc) from exc
        return RawResponse(response.status_code, response.headers, content)

    async def _read(self, call: Call, response: httpx.Response) -> bytes:
        """The whole body, refusing it as soon as it is known to pass the size limit."""
        limit = self._limit
        if limit is None:
            return await response.aread()
        length = response.headers.get("content-length", "")
        chunks: list[bytes] = []
        size = int(length) if length.isdigit() else 0
        if size <= limit:
            size = 0
            # Closed explicitly: leaving an async generator early must not leave it to the GC.
            async with aclosing(response.aiter_bytes()) as stream:  # type: ignore[type-var]
                async for chunk in stream:
                    size += len(chunk)
                    if size > limit:
                        break
                    chunks.append(chunk)
        if size > limit:
            raise _too_large(call, limit)
        return b"".join(chunks)

    def _translate(self, call: Call, exc: httpx.HTTPError) -> Exception:
        """Map an httpx error onto the baas_async tree."""
        if self._closed:
            return _closed_error(call)
        connect_failure = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
        # Some transports (httpx-aiohttp) report any lost connection as a connect error:
        # believe it only while the trace says nothing was sent.
        if isinstance(exc, connect_failure) and call.sent is not True:
            return _connect_error(call, f": {exc!r}")
        if isinstance(exc, httpx.TimeoutException):  # the caller's client's own timeouts
            return InvocationTimeout(
                f"{_subject(call)}: the HTTP client's own timeout expired: {exc!r}",
                function_name=call.function_name,
                may_have_run=call.may_have_run,
                elapsed=call.elapsed(),
                timeout=call.timeout if call.timeout is not None else call.elapsed(),
            )
        return _connection_lost(call, repr(exc))

    async def aclose(self) -> None:
        """Mark the sender closed; the caller's client or transport stays open."""
        self._closed = True
