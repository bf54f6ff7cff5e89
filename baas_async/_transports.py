"""Moving bytes: the two ways a call reaches the platform.

* ``NativeSender`` — the default on asyncio: a keep-alive connection pool of plain asyncio
  protocols with the llhttp parser (``httptools``). It does only what an invocation needs
  (one request, one response, HTTP/1.1, TLS) and so costs a fraction of a general client's
  CPU per call; ``benchmarks/transports.py`` holds the measurement behind the choice.
* ``HttpxSender`` — everything else: trio, a caller's ``httpx.AsyncClient``, or a caller's
  httpx transport (e.g. ``httpx.ASGITransport`` to call the emulator in-process).

Both take a request as (path, extra headers, body) and return a fully read ``RawResponse``;
both translate their library's errors into baas_async exceptions here and nowhere else.
Deadlines are not applied here: the caller wraps the whole call in one ``anyio.fail_after``.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Mapping
from typing import Any, NamedTuple, Protocol
from urllib.parse import urlsplit

import httptools
import httpx

from ._exceptions import ClientClosed, ConnectError, ConnectionLost, InvocationTimeout

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

    __slots__ = ("function_name", "request_id", "sent", "started", "timeout")

    def __init__(
        self, function_name: str | None, request_id: str, timeout: float | None, *, traced: bool
    ) -> None:
        self.function_name = function_name
        self.request_id = request_id
        self.timeout = timeout
        self.started = time.monotonic()
        self.sent: bool | None = False if traced else None

    def elapsed(self) -> float:
        """Seconds since the call started."""
        return time.monotonic() - self.started

    @property
    def may_have_run(self) -> bool:
        """Whether any part of the request may have reached the server."""
        return self.sent is not False


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


# -- the native asyncio transport ---------------------------------------------------------------


class _Failure(Exception):
    """Raised inside the native transport; translated in ``NativeSender.send``."""


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection, driven by one call at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[None] | None = None
        self._status = 0
        self._headers: dict[str, str] = {}
        self._header_name = ""
        self._body: list[bytes] = []
        self._headers_done = False
        self.keep_alive = True
        self.closed = False
        self.discarded = False
        self.idle_since = 0.0

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            # Bytes nobody asked for: the connection's state is unknown, so it must not be
            # reused.
            self.abort()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.abort()
            self._fail(_Failure(f"malformed HTTP reply: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._headers_done and not (
            "content-length" in self._headers or "transfer-encoding" in self._headers
        ):
            # A body delimited by the end of the connection is complete now.
            self.keep_alive = False
            waiter.set_result(None)
            return
        reason = f" ({exc})" if exc else ""
        self._fail(
            _Failure(f"the server closed the connection before the reply was complete{reason}")
        )

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()
        self.keep_alive = self._parser.should_keep_alive()
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # driving

    def _fail(self, exc: BaseException) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)

    def abort(self) -> None:
        """Close at once, dropping unsent data: used whenever the state is uncertain."""
        self.closed = True
        if self._transport is not None:
            self._transport.abort()

    async def roundtrip(self, call: Call, data: bytes) -> RawResponse:
        assert self._transport is not None
        self._status, self._headers, self._body, self._headers_done = 0, {}, [], False
        waiter = self._waiter = self._loop.create_future()
        try:
            self._transport.write(data)
            call.sent = True
            await waiter
        finally:
            self._waiter = None
        return RawResponse(self._status, self._headers, b"".join(self._body))


class _Pool:
    """A bounded pool of keep-alive connections to one origin.

    Waiters are served first-in first-out. A waiter is handed either an idle connection or,
    when a connection was dropped, its *slot* (``None``) to open a new one with, so the
    number of connections never exceeds ``max_connections``. A waiter cancelled after being
    handed something gives it back: cancelled waiters never leak slots.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext | None,
        max_connections: int,
        max_idle: int,
        keepalive_expiry: float | None,
    ) -> None:
        self._loop = loop
        self._host = host
        self._port = port
        self._ssl = ssl_context
        self._max = max_connections
        self._max_idle = max_idle
        self._expiry = keepalive_expiry
        self._slots_taken = 0
        self._idle: list[_Connection] = []
        self._busy: set[_Connection] = set()
        self._waiters: deque[asyncio.Future[_Connection | None]] = deque()
        self.closed = False

    async def acquire(self) -> _Connection:
        idle = self._idle
        while idle:
            conn = idle.pop()
            if not conn.closed and (
                self._expiry is None or time.monotonic() - conn.idle_since < self._expiry
            ):
                self._busy.add(conn)
                return conn
            self._drop(conn)
        if self._slots_taken < self._max:
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
                    self._busy.add(handed)
                    self.release(handed)
            raise
        if conn_or_slot is None:
            return await self._open()
        self._busy.add(conn_or_slot)
        if self.closed:
            self.discard(conn_or_slot)
            raise _Failure("pool closed")
        return conn_or_slot

    async def _open(self) -> _Connection:
        """Open a connection in a slot already taken; free the slot if that fails."""
        try:
            _, conn = await self._loop.create_connection(
                lambda: _Connection(self._loop),
                self._host,
                self._port,
                ssl=self._ssl,
                server_hostname=self._host if self._ssl else None,
            )
        except BaseException:
            self._free_slot()
            raise
        if self.closed:  # aclose() ran while we were connecting
            conn.abort()
            self._free_slot()
            raise _Failure("pool closed")
        self._busy.add(conn)
        return conn

    def release(self, conn: _Connection) -> None:
        """Return a connection after a complete exchange; reuse it if it can be."""
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
        if len(self._idle) >= self._max_idle:
            self._drop(conn)
            return
        conn.idle_since = time.monotonic()
        self._idle.append(conn)

    def discard(self, conn: _Connection) -> None:
        """Close a connection whose state is uncertain (error, cancellation) and free its slot."""
        self._busy.discard(conn)
        self._drop(conn)

    def _drop(self, conn: _Connection) -> None:
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

    def close(self) -> None:
        self.closed = True
        for conn in [*self._idle, *self._busy]:
            conn.abort()
        self._idle.clear()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(_Failure("pool closed"))

    @property
    def connections(self) -> int:
        """Connections open or being opened."""
        return self._slots_taken


class NativeSender:
    """The default sender on asyncio; see the module docstring."""

    traced = True

    def __init__(
        self,
        base_url: str,
        static_headers: list[tuple[str, str]],
        limits: httpx.Limits,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        scheme, host, port, self._prefix = split_base_url(base_url)
        default_port = 443 if scheme == "https" else 80
        authority = host if port == default_port else f"{host}:{port}"
        if ":" in host:  # IPv6 literal
            authority = f"[{host}]" if port == default_port else f"[{host}]:{port}"
        self._head = "".join(
            f"{name}: {value}\r\n" for name, value in [("Host", authority), *static_headers]
        )
        self._host, self._port = host, port
        self._ssl = (ssl_context or ssl.create_default_context()) if scheme == "https" else None
        self._max = limits.max_connections or 100
        self._max_idle = (
            self._max
            if limits.max_keepalive_connections is None
            else min(self._max, limits.max_keepalive_connections)
        )
        self._expiry = limits.keepalive_expiry
        self._pool: _Pool | None = None
        self._closed = False

    def _get_pool(self) -> _Pool:
        pool = self._pool
        if pool is None:
            pool = self._pool = _Pool(
                asyncio.get_running_loop(),
                self._host,
                self._port,
                self._ssl,
                self._max,
                self._max_idle,
                self._expiry,
            )
        return pool

    async def send(
        self, call: Call, method: str, path: str, headers: list[tuple[str, str]], body: bytes
    ) -> RawResponse:
        """Send one request on a pooled connection and read the whole reply."""
        head = "".join(f"{name}: {value}\r\n" for name, value in headers)
        data = (
            f"{method} {self._prefix}{path} HTTP/1.1\r\n{self._head}{head}"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        pool = self._get_pool()
        try:
            conn = await pool.acquire()
        except _Failure as exc:
            raise _closed_error(call) from exc
        except OSError as exc:
            if self._closed:
                raise _closed_error(call) from exc
            raise ConnectError(
                f"{_subject(call)}: could not connect to {self._host}:{self._port}: {exc}",
                function_name=call.function_name,
                may_have_run=False,
                elapsed=call.elapsed(),
            ) from exc
        try:
            response = await conn.roundtrip(call, data)
        except BaseException as exc:
            pool.discard(conn)
            if isinstance(exc, _Failure):
                if self._closed:
                    raise _closed_error(call) from exc
                raise ConnectionLost(
                    f"{_subject(call)}: {exc}",
                    function_name=call.function_name,
                    may_have_run=call.may_have_run,
                    elapsed=call.elapsed(),
                ) from exc
            raise
        pool.release(conn)
        return response

    async def aclose(self) -> None:
        """Close every connection; calls in flight fail with :class:`ClientClosed`."""
        self._closed = True
        if self._pool is not None:
            self._pool.close()

    @property
    def connections(self) -> int:
        """Connections open or being opened (for tests and diagnostics)."""
        return 0 if self._pool is None else self._pool.connections


# -- httpx ------------------------------------------------------------------------------------

# The client's own deadline governs; httpx's per-phase timeouts must not cut in first.
_NO_TIMEOUTS = {"connect": None, "read": None, "write": None, "pool": None}


class HttpxSender:
    """Sends through an httpx transport or a caller's ``httpx.AsyncClient``.

    ``owned`` senders close their transport in ``aclose``; a caller's client or transport is
    never closed or changed.
    """

    def __init__(
        self,
        base_url: str,
        static_headers: list[tuple[str, str]],
        *,
        client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        owned: bool = False,
        traced: bool = False,
    ) -> None:
        split_base_url(base_url)
        self._base_url = base_url.rstrip("/")
        self._static_headers = static_headers
        self._client = client
        self._transport = transport
        self._owned = owned
        self.traced = traced
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
                content = await response.aread()
            finally:
                await response.aclose()
        except httpx.HTTPError as exc:
            raise self._translate(call, exc) from exc
        return RawResponse(response.status_code, response.headers, content)

    def _translate(self, call: Call, exc: httpx.HTTPError) -> Exception:
        """Map an httpx error onto the baas_async tree."""
        if self._closed:
            return _closed_error(call)
        subject = _subject(call)
        if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)):
            return ConnectError(
                f"{subject}: could not connect: {exc!r}",
                function_name=call.function_name,
                may_have_run=False,
                elapsed=call.elapsed(),
            )
        if isinstance(exc, httpx.TimeoutException):  # the caller's client's own timeouts
            return InvocationTimeout(
                f"{subject}: the HTTP client's own timeout expired: {exc!r}",
                function_name=call.function_name,
                may_have_run=call.may_have_run,
                elapsed=call.elapsed(),
                timeout=call.timeout if call.timeout is not None else call.elapsed(),
            )
        return ConnectionLost(
            f"{subject}: {exc!r}",
            function_name=call.function_name,
            may_have_run=call.may_have_run,
            elapsed=call.elapsed(),
        )

    async def aclose(self) -> None:
        """Close the transport if this sender created it."""
        self._closed = True
        if self._owned and self._transport is not None:
            await self._transport.aclose()
