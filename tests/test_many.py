"""invoke_many / stream_many: bounded, lazy, ordered fan-out with per-item outcomes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import anyio
import pytest
from anyio import wait_all_tasks_blocked

from baas_async import AsyncBaaS, FunctionError, FunctionNotFound, ItemResult, set_testing
from baas_async._many import _AdaptiveLimit

from ._servers import response, scripted, serve
from .conftest import ServedEmulator

pytestmark = pytest.mark.anyio


async def test_results_come_back_in_input_order(emulator: ServedEmulator) -> None:
    """invoke_many returns one ItemResult per input, in input order."""
    async with AsyncBaaS("demo", base_url=emulator.url) as baas:
        results = await baas.invoke_many("echo", range(300), concurrency=64)
    assert [item.index for item in results] == list(range(300))
    assert [item.unwrap()["data"] for item in results] == list(range(300))
    assert all(isinstance(item, ItemResult) and item.ok for item in results)


async def test_mixed_calls_and_per_item_failures(emulator: ServedEmulator) -> None:
    """(name, params) pairs mix functions; failures are values, not exceptions."""
    calls = [("echo", 1), ("fail", {"message": "boom"}), ("missing", None), ("async_echo", 4)]
    async with AsyncBaaS("demo", base_url=emulator.url) as baas:
        results = await baas.invoke_many(None, calls)
    echo, fail, missing, async_echo = results
    assert echo.ok
    assert echo.unwrap()["data"] == 1
    assert fail.error is None
    assert fail.result is not None
    assert not fail.ok
    assert isinstance(missing.error, FunctionNotFound)
    assert async_echo.function_name == "async_echo"
    with pytest.raises(FunctionNotFound):
        missing.unwrap()


async def test_fail_fast_raises_the_first_error(emulator: ServedEmulator) -> None:
    """fail_fast=True cancels the rest and raises the error itself, not a group."""
    calls = [("echo", i) for i in range(20)] + [("missing", None)]
    async with AsyncBaaS("demo", base_url=emulator.url) as baas:
        with pytest.raises(FunctionNotFound):
            await baas.invoke_many(None, calls, fail_fast=True, concurrency=4)


async def test_fail_fast_stops_at_a_failed_function(emulator: ServedEmulator) -> None:
    """fail_fast also stops at a function that failed, raising its FunctionError."""
    async with AsyncBaaS("demo", base_url=emulator.url) as baas:
        with pytest.raises(FunctionError, match="boom"):
            await baas.invoke_many(None, [("fail", {"message": "boom"})], fail_fast=True)


async def test_consumer_errors_propagate_as_themselves(emulator: ServedEmulator) -> None:
    """An exception raised in the consumer's loop comes out unwrapped."""

    async def consume(baas: AsyncBaaS) -> None:
        async with baas.stream_many("fail", [{"message": "x"}] * 3) as results:
            async for item in results:
                item.unwrap()

    async with AsyncBaaS("demo", base_url=emulator.url) as baas:
        with pytest.raises(FunctionError):
            await consume(baas)


async def test_fan_out_ends_after_the_limit_shrank() -> None:
    """Pushback shrinks the in-flight limit; the fan-out still finishes every input."""
    reply = response(200, b'{"code": 0, "data": 1, "error": {}}')
    refusal = response(429, b'{"status": "error", "error_msg": "slow down"}')
    set_testing(True)
    try:
        async with (
            serve(scripted(refusal, reply)) as server,
            AsyncBaaS("demo", base_url=server.url) as baas,
        ):
            with anyio.fail_after(5):
                results = await baas.invoke_many("f", range(8), concurrency=4)
    finally:
        set_testing(False)
    assert [item.ok for item in results] == [True] * 8
    assert len(server.arrivals) == 9


async def test_malformed_mixed_input_raises_type_error(emulator: ServedEmulator) -> None:
    """A mixed-call input that is not a (name, params) pair stops the fan-out, naming it."""
    async with AsyncBaaS("demo", base_url=emulator.url) as baas:
        with pytest.raises(TypeError, match="input 1"):
            await baas.invoke_many(None, [("echo", 1), "echo"])


async def test_concurrency_is_bounded_and_input_pulled_lazily() -> None:
    """No more than `concurrency` calls are in flight, and inputs are pulled only as needed."""
    gate = anyio.Event()
    pulled = 0

    def payloads() -> Iterator[int]:
        nonlocal pulled
        for i in range(1_000_000):
            pulled += 1
            yield i

    async def hold(stream, request: bytes) -> bool:
        await gate.wait()
        await stream.send(response(200, b'{"code": 0, "data": 1, "error": {}}'))
        return True

    async with serve(hold) as server, AsyncBaaS("demo", base_url=server.url) as baas:
        async with baas.stream_many("f", payloads(), concurrency=5) as results:
            await wait_all_tasks_blocked()
            assert len(server.arrivals) == 5
            assert pulled <= 6
            gate.set()
            taken = 0
            async for item in results:
                assert item.ok
                taken += 1
                if taken == 100:
                    break
        assert pulled <= 100 + 2 * 5 + 1


async def test_as_completed_and_async_input(emulator: ServedEmulator) -> None:
    """ordered=False yields as calls complete; async iterables are accepted."""

    async def payloads() -> AsyncIterator[int]:
        for i in range(50):
            yield i

    async with (
        AsyncBaaS("demo", base_url=emulator.url) as baas,
        baas.stream_many("echo", payloads(), ordered=False) as results,
    ):
        indexes = [item.index async for item in results]
    assert sorted(indexes) == list(range(50))


async def test_progress_reports_done_and_failed(emulator: ServedEmulator) -> None:
    """progress(done, failed, in_flight) follows every call."""
    seen: list[tuple[int, int, int]] = []
    calls = [("echo", 1), ("missing", 2), ("echo", 3)]
    async with AsyncBaaS("demo", base_url=emulator.url) as baas:
        await baas.invoke_many(None, calls, progress=lambda *counts: seen.append(counts))
    assert [done for done, _, _ in seen] == [1, 2, 3]
    assert seen[-1][:2] == (3, 1)


async def test_async_jobs_fan_out(emulator: ServedEmulator) -> None:
    """sync=False queues every job and returns the accepted results."""
    async with AsyncBaaS("demo", base_url=emulator.url) as baas:
        results = await baas.invoke_many("echo", range(10), sync=False)
    assert all(item.ok and item.unwrap() is None for item in results)
    await emulator.wait_idle()
    assert sorted(job.data for job in emulator.emulator.jobs) == list(range(10))


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"concurrency": 0}, ValueError),
        ({"sync": 1}, TypeError),
        ({"timeout": -1}, ValueError),
        ({"retry": 3}, TypeError),
    ],
)
async def test_bad_arguments_fail_before_any_call(kwargs: dict, error: type) -> None:
    """Fan-out options are checked up front."""
    baas = AsyncBaaS("demo", base_url="http://127.0.0.1:9")
    with pytest.raises(error):
        baas.stream_many("echo", [1], **kwargs)
    with pytest.raises(TypeError, match="iterable"):
        baas.stream_many("echo", 5)  # type: ignore[arg-type]
    await baas.aclose()


def test_adaptive_limit_halves_on_pushback_and_grows_back() -> None:
    """AIMD: one halving per round of pushed-back calls, about +1 per round of successes."""
    limit = _AdaptiveLimit(64, adaptive=True)

    async def scenario() -> None:
        epochs = [await limit.admit(worker) for worker in range(64)]
        for epoch in epochs:
            limit.done(pushed_back=True, epoch=epoch)
        assert limit.limit == 32  # a burst of 64 pushbacks halves once, not 64 times
        for _ in range(3):
            limit.done(pushed_back=True, epoch=await limit.admit(0))
        assert limit.limit == 4
        for _ in range(200):
            limit.done(pushed_back=False, epoch=await limit.admit(0))
        assert 4 < limit.limit <= 64

    anyio.run(scenario)


def test_item_result_ok_reflects_the_function() -> None:
    """ItemResult.ok is false for a failed function even though no exception was raised."""
    from baas_async import InvokeResult

    failed = ItemResult(0, "f", None, result=InvokeResult("f", code=1))
    assert not failed.ok
    assert json.dumps(ItemResult(1, "f", None, result=InvokeResult("f", code=0)).ok) == "true"
