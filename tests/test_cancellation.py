"""Cancellation and closing never leak a connection, a pool slot or a half-read reply."""

from __future__ import annotations

import json

import anyio
import httpx
import pytest
from anyio import wait_all_tasks_blocked

from baas_async import AsyncBaaS, ClientClosed

from ._servers import response, serve

pytestmark = pytest.mark.anyio

OK = response(200, json.dumps({"code": 0, "data": "done", "error": {}}).encode())


def gated(gate: anyio.Event):
    """A handler that answers only once ``gate`` is set."""

    async def handler(stream, request: bytes) -> bool:
        await gate.wait()
        await stream.send(OK)
        return True

    return handler


async def test_cancelling_queued_calls_leaves_the_pool_healthy() -> None:
    """After cancelling 200 calls queued behind a pool of 10, ten fresh calls succeed."""
    gate = anyio.Event()
    limits = httpx.Limits(max_connections=10)
    async with (
        serve(gated(gate)) as server,
        AsyncBaaS("demo", base_url=server.url, limits=limits) as baas,
    ):
        async with anyio.create_task_group() as tg:
            for _ in range(210):
                tg.start_soon(lambda: baas.invoke("f", timeout=None))
            await wait_all_tasks_blocked()
            assert len(server.arrivals) == 10  # ten in flight, two hundred queued
            tg.cancel_scope.cancel()
        gate.set()
        results = []
        with anyio.fail_after(2):
            async with anyio.create_task_group() as tg:
                for _ in range(10):

                    async def call() -> None:
                        results.append(await baas.invoke("f"))

                    tg.start_soon(call)
    assert [r.data for r in results] == ["done"] * 10
    assert server.connections <= 20  # the ten interrupted ones were closed, not reused
    assert len(server.arrivals) == 20


async def test_cancelled_call_sends_nothing_more() -> None:
    """A call cancelled while queued is never sent, even when a connection frees up later."""
    gate = anyio.Event()
    limits = httpx.Limits(max_connections=1)
    async with (
        serve(gated(gate)) as server,
        AsyncBaaS("demo", base_url=server.url, limits=limits) as baas,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(lambda: baas.invoke("first", timeout=None))
        await server.first_request.wait()
        with anyio.CancelScope() as scope:
            scope.cancel()
            await baas.invoke("cancelled", timeout=None)
        gate.set()
        assert (await baas.invoke("after")).ok
    names = [request.split(b'"function_name":"')[1].split(b'"')[0] for request in server.requests]
    assert b"cancelled" not in names
    assert names == [b"first", b"after"]


async def test_aclose_fails_queued_and_in_flight_calls() -> None:
    """aclose() fails every call in flight or queued with ClientClosed, promptly."""
    gate = anyio.Event()
    errors: list[BaseException] = []
    limits = httpx.Limits(max_connections=5)
    async with serve(gated(gate)) as server:
        baas = AsyncBaaS("demo", base_url=server.url, limits=limits)

        async def call() -> None:
            try:
                await baas.invoke("f", timeout=None)
            except ClientClosed as exc:
                errors.append(exc)

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                for _ in range(50):
                    tg.start_soon(call)
                await wait_all_tasks_blocked()
                await baas.aclose()
        gate.set()
    assert len(errors) == 50
    assert sum(e.may_have_run for e in errors) == 5  # only the five that were sent
