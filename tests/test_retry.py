"""Retries: only where the function provably did not run, inside the deadline, on a budget."""

from __future__ import annotations

import json
from collections.abc import Iterator

import anyio
import httpx
import pytest

from baas_async import (
    AsyncBaaS,
    ClientClosed,
    ConnectError,
    ConnectionLost,
    InvalidResponse,
    InvocationRejected,
    InvocationTimeout,
    RateLimited,
    ResponseTooLarge,
    RetryBudget,
    RetryPolicy,
    ServerError,
    set_testing,
)

from ._servers import HANG_UP, SILENCE, free_port, response, scripted, serve

pytestmark = pytest.mark.anyio

OK = response(200, json.dumps({"code": 0, "data": "done", "error": {}}).encode())


def error_reply(status: int, *headers: str, message: str = "nope") -> bytes:
    """A platform error reply."""
    body = json.dumps({"status": "error", "error_msg": message}).encode()
    return response(status, body, "Content-Type: application/json", *headers)


@pytest.fixture
def no_backoff() -> Iterator[None]:
    """Retries without pauses for the duration of a test."""
    set_testing(True)
    yield
    set_testing(False)


@pytest.mark.parametrize(
    "first",
    [HANG_UP, error_reply(500), error_reply(502), error_reply(504), response(200, b"<html>")],
    ids=["lost-after-send", "500", "502", "504", "garbled"],
)
async def test_delivered_calls_reach_the_server_once_by_default(first: bytes) -> None:
    """A call that fails after its request was delivered is never replayed by default."""
    async with serve(scripted(first, OK)) as server, AsyncBaaS("demo", base_url=server.url) as b:
        with pytest.raises((ConnectionLost, ServerError, InvalidResponse)) as info:
            await b.invoke("f")
    assert info.value.may_have_run
    assert info.value.attempts == 1
    assert len(server.arrivals) == 1


@pytest.mark.parametrize(
    "first",
    [HANG_UP, error_reply(500), error_reply(502), error_reply(504), response(200, b"<html>")],
    ids=["lost-after-send", "500", "502", "504", "garbled"],
)
async def test_idempotent_calls_are_replayed_with_the_same_request_id(
    first: bytes, no_backoff: None
) -> None:
    """idempotent=True replays a delivered call; every attempt carries one X-Request-Id."""
    async with serve(scripted(first, OK)) as server, AsyncBaaS("demo", base_url=server.url) as b:
        result = await b.invoke("f", idempotent=True)
    assert (result.data, result.attempts) == ("done", 2)
    assert server.times_seen(result.request_id or "") == 2


async def test_idempotent_functions_in_the_policy(no_backoff: None) -> None:
    """A policy can name the functions that are safe to replay."""
    policy = RetryPolicy(idempotent_functions={"safe"})
    async with (
        serve(scripted(error_reply(502), OK, error_reply(502), OK)) as server,
        AsyncBaaS("demo", base_url=server.url, retry=policy) as b,
    ):
        assert (await b.invoke("safe")).attempts == 2
        with pytest.raises(ServerError):
            await b.invoke("unsafe")
    assert len(server.arrivals) == 3


@pytest.mark.parametrize(
    "refusal",
    [
        error_reply(429),
        error_reply(503),
        error_reply(400, message="schedule_failed: concurrency quota of 100 running jobs is full"),
    ],
    ids=["429", "503", "schedule-failed"],
)
async def test_refusals_are_retried(refusal: bytes, no_backoff: None) -> None:
    """429, 503 and scheduling failures never ran the function: retried, then succeed."""
    async with (
        serve(scripted(refusal, refusal, OK)) as server,
        AsyncBaaS("demo", base_url=server.url) as b,
    ):
        result = await b.invoke("f")
    assert (result.ok, result.attempts) == (True, 3)
    assert server.times_seen(result.request_id or "") == 3


async def test_attempts_are_bounded_and_reported(no_backoff: None) -> None:
    """When every attempt fails, the last error says how many were made."""
    async with (
        serve(scripted(error_reply(503))) as server,
        AsyncBaaS("demo", base_url=server.url, retry=RetryPolicy(attempts=4)) as b,
    ):
        with pytest.raises(ServerError) as info:
            await b.invoke("f")
    assert info.value.attempts == 4
    assert len(server.arrivals) == 4


async def test_execution_failure_400_is_not_retried(no_backoff: None) -> None:
    """A 400 that is not a scheduling failure may have run: not retried."""
    async with (
        serve(scripted(error_reply(400, message="execution failed"), OK)) as server,
        AsyncBaaS("demo", base_url=server.url) as b,
    ):
        with pytest.raises(InvocationRejected):
            await b.invoke("f")
    assert len(server.arrivals) == 1


async def test_connection_refused_is_retried_then_reported(no_backoff: None) -> None:
    """Nothing listening: retried (it never ran), then ConnectError with the attempt count."""
    async with AsyncBaaS("demo", base_url=f"http://127.0.0.1:{free_port()}") as b:
        with pytest.raises(ConnectError) as info:
            await b.invoke("f")
    assert info.value.attempts == 3


async def test_retry_after_is_honoured() -> None:
    """A 429 with Retry-After: 1 is retried no sooner than 1 s later."""
    async with (
        serve(scripted(error_reply(429, "Retry-After: 1"), OK)) as server,
        AsyncBaaS("demo", base_url=server.url) as b,
    ):
        result = await b.invoke("f")
    (first, _), (second, _) = server.arrivals
    assert result.attempts == 2
    assert second - first >= 1.0


async def test_retry_after_past_the_deadline_fails_at_once() -> None:
    """Retry-After: 86400 cannot fit in a 5 s deadline: the call fails at once, saying so."""
    async with (
        serve(scripted(error_reply(429, "Retry-After: 86400"), OK)) as server,
        AsyncBaaS("demo", base_url=server.url) as b,
    ):
        with anyio.fail_after(2), pytest.raises(RateLimited) as info:
            await b.invoke("f")
    assert info.value.retry_after == 86400
    assert info.value.attempts == 1
    assert len(server.arrivals) == 1


async def test_retries_stay_inside_the_deadline() -> None:
    """Backoff pauses count against the call's one deadline."""
    policy = RetryPolicy(attempts=100, initial_backoff=0.2, max_backoff=0.2)
    async with (
        serve(scripted(error_reply(503))) as server,
        AsyncBaaS("demo", base_url=server.url, retry=policy) as b,
    ):
        with anyio.fail_after(1.5), pytest.raises((InvocationTimeout, ServerError)) as info:
            await b.invoke("f", timeout=1)
    assert 1 < info.value.attempts < 100


async def test_no_retry_policy(no_backoff: None) -> None:
    """retry=None sends once, per call or per client."""
    async with serve(scripted(error_reply(503))) as server:
        async with AsyncBaaS("demo", base_url=server.url) as b:
            with pytest.raises(ServerError):
                await b.invoke("f", retry=None)
        async with AsyncBaaS("demo", base_url=server.url, retry=None) as b:
            with pytest.raises(ServerError):
                await b.invoke("f")
    assert len(server.arrivals) == 2


async def test_budget_caps_retries_across_calls(no_backoff: None) -> None:
    """An exhausted retry budget stops retries for every call of the client."""
    budget = RetryBudget(capacity=10, retry_cost=5)
    async with (
        serve(scripted(error_reply(503))) as server,
        AsyncBaaS("demo", base_url=server.url, retry_budget=budget) as b,
    ):
        for _ in range(2):
            with pytest.raises(ServerError):
                await b.invoke("f")
    assert len(server.arrivals) == 3 + 1
    assert budget.tokens == 0


async def test_idle_connection_closed_by_the_server_is_replaced() -> None:
    """A kept-alive connection the server closed while idle is replaced, not retried."""
    closed = anyio.Event()

    async def reply_then_close_idle(stream, request: bytes) -> bool:
        await stream.send(OK)  # no "Connection: close": the client may keep it
        closed.set()
        return False

    async with serve(reply_then_close_idle) as server, AsyncBaaS("demo", base_url=server.url) as b:
        first = await b.invoke("f")
        await closed.wait()
        second = await b.invoke("f")
    assert (first.attempts, second.attempts) == (1, 1)
    assert server.connections == 2


async def test_reused_connection_dropped_after_the_request_is_not_replayed() -> None:
    """A reused connection that breaks after the server read the request may have run the
    function: reported, and sent only once."""
    served_on: dict[int, int] = {}

    async def handler(stream, request: bytes) -> bool:
        served_on[id(stream)] = served_on.get(id(stream), 0) + 1
        if served_on[id(stream)] == 2:
            return False  # read the request, then drop the connection
        await stream.send(OK)
        return True

    async with serve(handler) as server, AsyncBaaS("demo", base_url=server.url) as b:
        await b.invoke("f")
        with pytest.raises(ConnectionLost) as info:
            await b.invoke("f")
    assert info.value.may_have_run
    assert info.value.attempts == 1
    assert len(server.arrivals) == 2


async def test_aclose_ends_a_pause_between_attempts() -> None:
    """aclose() fails a call waiting to retry at once, without another attempt."""
    async with serve(scripted(error_reply(429, "Retry-After: 3"), OK)) as server:
        baas = AsyncBaaS("demo", base_url=server.url)
        errors: list[BaseException] = []

        async def call() -> None:
            try:
                await baas.invoke("f")
            except ClientClosed as exc:
                errors.append(exc)

        with anyio.fail_after(1):
            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                await server.first_request.wait()
                await anyio.wait_all_tasks_blocked()
                await baas.aclose()
    assert len(errors) == 1
    assert len(server.arrivals) == 1


@pytest.mark.parametrize(
    ("head", "chunk"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n", b"x" * 1024),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"400\r\n" + b"x" * 1024 + b"\r\n",
        ),
    ],
    ids=["content-length", "streamed"],
)
@pytest.mark.parametrize("via_httpx", [False, True], ids=["native", "httpx"])
# httpx nests async generators when streaming a body; leaving one early (as the cap must)
# closes only the outermost, and trio reports the inner ones when they are collected.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_response_size_cap(head: bytes, chunk: bytes, via_httpx: bool) -> None:
    """A reply over max_response_size raises ResponseTooLarge early; the connection closes."""
    closed = anyio.Event()

    async def handler(stream, request: bytes) -> bool:
        await stream.send(head)
        for _ in range(1000):  # 1 MiB at most: keep sending until the client hangs up
            try:
                await stream.send(chunk)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                break
            await anyio.sleep(0.001)
        closed.set()
        return False

    async with serve(handler) as server:
        http = httpx.AsyncClient() if via_httpx else None
        async with AsyncBaaS(
            "demo", base_url=server.url, max_response_size=4096, http_client=http
        ) as b:
            with pytest.raises(ResponseTooLarge) as info:
                await b.invoke("f")
            if http is not None:
                await http.aclose()
            with anyio.fail_after(5):
                await closed.wait()
    assert info.value.limit == 4096
    assert len(server.arrivals) == 1


async def test_silence_is_not_retried() -> None:
    """A call that timed out after sending is not replayed (the deadline is spent anyway)."""
    async with (
        serve(scripted(SILENCE)) as server,
        AsyncBaaS("demo", base_url=server.url) as b,
    ):
        with pytest.raises(InvocationTimeout) as info:
            await b.invoke("f", timeout=0.3, idempotent=True)
    assert info.value.attempts == 1
    assert len(server.arrivals) == 1
