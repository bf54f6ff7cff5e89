"""Deadlines and transport faults, against small misbehaving loopback servers."""

from __future__ import annotations

import json

import anyio
import httpx
import pytest

from baas_async import (
    AsyncBaaS,
    ClientClosed,
    ConnectError,
    ConnectionLost,
    FunctionNotFound,
    InvalidResponse,
    InvocationTimeout,
    RateLimited,
    ServerError,
)

from ._servers import (
    canned,
    free_port,
    half_reply,
    hang_up,
    never_answer,
    response,
    serve,
    trickle,
)

pytestmark = pytest.mark.anyio

HELLO = json.dumps({"code": 0, "data": "hello allen", "error": {}}).encode()
#: How much later than its deadline a call may fail (scheduling, closing the connection).
SLACK = 0.5


@pytest.mark.parametrize("handler", [never_answer, trickle], ids=["silent", "trickle"])
@pytest.mark.parametrize("timeout", [None, 1.0], ids=["default", "timeout=1"])
async def test_deadline_covers_the_whole_call(handler, timeout: float | None) -> None:
    """A silent server or one trickling a byte every 0.3 s cannot stretch the deadline."""
    deadline = 5.0 if timeout is None else timeout
    kwargs = {} if timeout is None else {"timeout": timeout}
    async with serve(handler) as server, AsyncBaaS("demo", base_url=server.url) as baas:
        with anyio.fail_after(deadline + SLACK), pytest.raises(InvocationTimeout) as info:
            await baas.invoke("helloWorld", **kwargs)
    error = info.value
    assert isinstance(error, TimeoutError)
    assert error.timeout == deadline
    assert error.elapsed is not None
    assert error.elapsed >= deadline
    assert error.may_have_run
    assert error.function_name == "helloWorld"


async def test_timeout_waiting_for_a_pooled_connection_says_nothing_ran() -> None:
    """A call that timed out queued behind a full pool was never sent."""
    limits = httpx.Limits(max_connections=1)
    async with (
        serve(never_answer) as server,
        AsyncBaaS("demo", base_url=server.url, limits=limits) as baas,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(lambda: baas.invoke("occupy", timeout=None))
        await server.first_request.wait()
        with pytest.raises(InvocationTimeout) as info:
            await baas.invoke("queued", timeout=0.5)
        tg.cancel_scope.cancel()
    assert not info.value.may_have_run
    assert "nothing was sent" in str(info.value)


async def test_connection_refused_is_connect_error() -> None:
    """Nothing listening: ConnectError, and the function certainly did not run."""
    async with AsyncBaaS("demo", base_url=f"http://127.0.0.1:{free_port()}") as baas:
        with pytest.raises(ConnectError) as info:
            await baas.invoke("helloWorld")
    assert not info.value.may_have_run


@pytest.mark.parametrize("handler", [hang_up, half_reply, canned(b"SSH-2.0-OpenSSH\r\n\r\n")])
async def test_broken_reply_after_sending_is_connection_lost(handler) -> None:
    """A hang-up, a truncated reply or a non-HTTP reply after sending: ConnectionLost."""
    async with serve(handler) as server, AsyncBaaS("demo", base_url=server.url) as baas:
        with pytest.raises(ConnectionLost) as info:
            await baas.invoke("helloWorld")
    assert info.value.may_have_run
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    ("reply", "error_class"),
    [
        (
            response(502, b"<html><h1>502 Bad Gateway</h1></html>", "Content-Type: text/html"),
            ServerError,
        ),
        (
            response(200, b'{"code": 0, "data": ', "Content-Type: application/json"),
            InvalidResponse,
        ),
        (response(404, b'{"status": "error", "error_msg": "no such function"}'), FunctionNotFound),
        (
            response(429, b'{"status": "error", "error_msg": "slow down"}', "Retry-After: 7"),
            RateLimited,
        ),
    ],
    ids=["html-502", "malformed-200", "404", "429"],
)
async def test_bad_replies_raise_typed_errors(reply: bytes, error_class: type) -> None:
    """Each documented failure reply raises its own BaaSError subclass over real HTTP."""
    async with serve(canned(reply)) as server, AsyncBaaS("demo", base_url=server.url) as baas:
        with pytest.raises(error_class) as info:
            await baas.invoke("helloWorld")
    if error_class is RateLimited:
        assert info.value.retry_after == 7.0


@pytest.mark.parametrize(
    "reply",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + HELLO,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (HELLO[:9], HELLO[9:]))
        + b"0\r\n\r\n",
    ],
    ids=["until-close", "chunked"],
)
async def test_bodies_delimited_by_close_or_chunks_decode(reply: bytes) -> None:
    """Replies without Content-Length (read to the close, or chunked) decode in full."""

    async def handler(stream, request: bytes) -> None:
        await stream.send(reply)

    async with serve(handler) as server, AsyncBaaS("demo", base_url=server.url) as baas:
        assert (await baas.invoke("helloWorld")).unwrap() == "hello allen"


async def test_keep_alive_connection_is_reused() -> None:
    """Sequential calls share one connection."""
    async with (
        serve(canned(response(200, HELLO))) as server,
        AsyncBaaS("demo", base_url=server.url) as baas,
    ):
        for _ in range(5):
            assert (await baas.invoke("helloWorld")).ok
    assert server.connections == 1
    assert len(server.requests) == 5


async def test_interrupted_connection_is_not_reused() -> None:
    """A call cancelled mid-reply closes its connection; the next call opens a fresh one."""
    replies = iter([b"", response(200, HELLO)])

    async def handler(stream, request: bytes) -> None:
        reply = next(replies)
        if not reply:
            await anyio.sleep_forever()
        await stream.send(reply)

    async with serve(handler) as server, AsyncBaaS("demo", base_url=server.url) as baas:
        async with anyio.create_task_group() as tg:
            tg.start_soon(baas.invoke, "helloWorld")
            await server.first_request.wait()
            tg.cancel_scope.cancel()
        assert (await baas.invoke("helloWorld")).unwrap() == "hello allen"
    assert server.connections == 2


async def test_aclose_fails_calls_in_flight_promptly() -> None:
    """aclose() while a call waits for its reply fails that call with ClientClosed."""
    errors: list[BaseException] = []
    async with serve(never_answer) as server:
        baas = AsyncBaaS("demo", base_url=server.url)

        async def call() -> None:
            try:
                await baas.invoke("helloWorld", timeout=None)
            except ClientClosed as exc:
                errors.append(exc)

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                await server.first_request.wait()
                await baas.aclose()
    (error,) = errors
    assert error.may_have_run


async def test_server_closing_after_each_reply_never_fails_a_call() -> None:
    """A server that closes after every reply (without saying so) costs reconnects, not
    errors, even for calls handed a connection while queued behind a pool of one."""

    async def reply_then_close(stream, request: bytes) -> bool:
        await stream.send(response(200, HELLO))
        return False

    limits = httpx.Limits(max_connections=1)
    results = []
    async with (
        serve(reply_then_close) as server,
        AsyncBaaS("demo", base_url=server.url, limits=limits) as baas,
    ):

        async def call() -> None:
            results.append(await baas.invoke("helloWorld"))

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(call)
    assert [r.data for r in results] == ["hello allen"] * 5
    assert len(server.requests) == 5


@pytest.mark.parametrize(
    ("reply", "outcome"),
    [
        (b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + response(200, HELLO), "ok"),
        (response(200, HELLO) + b"\x00garbage", "ok"),
        (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n", ConnectionLost),
    ],
    ids=["interim-103", "trailing-garbage", "upgrade-101"],
)
async def test_unusual_framing(reply: bytes, outcome: object) -> None:
    """An interim 1xx reply is skipped; bytes after a complete reply do not spoil it (the
    connection is not reused); a protocol switch is a lost connection."""

    async def handler(stream, request: bytes) -> bool:
        await stream.send(reply)
        return True

    async with serve(handler) as server, AsyncBaaS("demo", base_url=server.url) as baas:
        if outcome == "ok":
            for _ in range(2):
                assert (await baas.invoke("helloWorld")).unwrap() == "hello allen"
        else:
            with pytest.raises(ConnectionLost):
                await baas.invoke("helloWorld")
    if reply.endswith(b"garbage"):
        assert server.connections == 2


async def test_failed_token_exchange_is_the_calls_failure() -> None:
    """A token endpoint failing fails the call, naming the function, which did not run."""
    reply = response(500, b'{"status": "error", "error_msg": "oops"}')
    async with (
        serve(canned(reply)) as server,
        AsyncBaaS("demo", client_secret="secret", base_url=server.url) as baas,
    ):
        with pytest.raises(ServerError) as info:
            await baas.invoke("helloWorld")
    assert info.value.function_name == "helloWorld"
    assert not info.value.may_have_run
    assert b"oauth2" in server.requests[0]
