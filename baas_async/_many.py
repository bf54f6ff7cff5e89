"""Fan-out: many invocations with bounded, adaptive concurrency (``AsyncBaaS.stream_many``)."""

from __future__ import annotations

from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
)
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
from attrs import field, frozen

from ._exceptions import BaaSError, InvocationRejected, RateLimited, ServerError
from ._models import AcceptedJob, InvokeResult

__all__ = ["ItemResult", "Progress", "fan_out"]

#: Called after each item: (done, failed, in flight).
Progress = Callable[[int, int, int], None]
#: Invokes one item: (function name, params) -> outcome.
Invoke = Callable[[str, Any], Awaitable[InvokeResult | AcceptedJob]]


@frozen
class ItemResult:
    """The outcome of one input of ``invoke_many`` / ``stream_many``.

    ``index`` is the input's position (0-based), ``function_name`` and ``params`` what was
    invoked; exactly one of ``result`` (the call's :class:`InvokeResult` or
    :class:`AcceptedJob`) and ``error`` (the :class:`BaaSError` it raised) is set.
    ``ok`` is true when the call succeeded and, for sync calls, the function returned
    normally; ``unwrap()`` returns the data or raises.
    """

    index: int
    function_name: str
    params: Any = field(repr=False)
    result: InvokeResult | AcceptedJob | None = None
    error: BaaSError | None = None

    @property
    def ok(self) -> bool:
        """Whether the call succeeded (and a sync function returned normally)."""
        if self.error is not None:
            return False
        return not isinstance(self.result, InvokeResult) or self.result.ok

    def unwrap(self) -> Any:
        """The function's data (``None`` for an accepted async job); raises the call's
        error, or :class:`FunctionError` for a failed function."""
        if self.error is not None:
            raise self.error
        if isinstance(self.result, InvokeResult):
            return self.result.unwrap()
        return None


class _AdaptiveLimit:
    """In-flight limit with additive increase and multiplicative decrease (like TCP).

    Each call that succeeds at its first attempt raises the limit by ``1 / limit`` (about
    one per round of calls); a call the platform pushed back (429, 503, a job that could
    not be scheduled, or any call that needed a retry) halves it, at most once per round:
    calls started before the last decrease cannot decrease it again.
    """

    def __init__(self, ceiling: int, adaptive: bool) -> None:
        self._ceiling = ceiling
        self._adaptive = adaptive
        self._limit = float(ceiling)
        self._limiter = anyio.CapacityLimiter(ceiling)
        self.epoch = 0

    @property
    def in_flight(self) -> int:
        return self._limiter.borrowed_tokens

    async def acquire(self, borrower: object) -> int:
        await self._limiter.acquire_on_behalf_of(borrower)
        return self.epoch

    def release(self, borrower: object, *, pushed_back: bool, epoch: int) -> None:
        self._limiter.release_on_behalf_of(borrower)
        if not self._adaptive:
            return
        if pushed_back:
            if epoch == self.epoch:
                self.epoch += 1
                self._limit = max(1.0, self._limit / 2)
        else:
            self._limit = min(float(self._ceiling), self._limit + 1 / self._limit)
        self._limiter.total_tokens = max(1, int(self._limit))

    @property
    def limit(self) -> int:
        return int(self._limiter.total_tokens)


def _pushed_back(outcome: InvokeResult | AcceptedJob | BaaSError) -> bool:
    if isinstance(outcome, (RateLimited, InvocationRejected)):
        return not outcome.may_have_run
    if isinstance(outcome, ServerError):
        return outcome.status == 503
    return outcome.attempts > 1


_END = object()


class _Entries:
    """Pulls inputs one at a time from an iterable or an async iterable, and closes an
    async generator input when the fan-out ends early (not leaving it to the GC)."""

    def __init__(self, items: Iterable[Any] | AsyncIterable[Any]) -> None:
        self._async: AsyncIterator[Any] | None = None
        self._sync: Iterator[Any] | None = None
        if isinstance(items, AsyncIterable):
            self._async = aiter(items)
        else:
            self._sync = iter(items)

    async def next(self) -> Any:
        if self._async is not None:
            try:
                return await anext(self._async)
            except StopAsyncIteration:
                return _END
        assert self._sync is not None
        return next(self._sync, _END)

    async def aclose(self) -> None:
        close = getattr(self._async, "aclose", None)
        if close is not None:
            await close()


@asynccontextmanager
async def fan_out(
    invoke: Invoke,
    function_name: str | None,
    params: Iterable[Any] | AsyncIterable[Any],
    *,
    concurrency: int,
    ordered: bool,
    fail_fast: bool,
    adaptive: bool,
    progress: Progress | None,
) -> AsyncIterator[AsyncIterator[ItemResult]]:
    """Run ``invoke`` over the inputs and hand out their results as an async iterator.

    Inputs are pulled only when a slot is free, and at most ``2 * concurrency`` finished
    results wait for the consumer, so memory stays bounded whatever the input's length.
    """
    limit = _AdaptiveLimit(concurrency, adaptive)
    window = anyio.Semaphore(2 * concurrency)
    send, receive = anyio.create_memory_object_stream[ItemResult](2 * concurrency)
    counts = {"done": 0, "failed": 0}
    # The error that ends the whole fan-out (fail_fast, or a bad input), raised as itself
    # after the task group has stopped rather than wrapped in an exception group.
    failure: list[Exception] = []

    async def run_one(
        tg: anyio.abc.TaskGroup, index: int, name: str, item: Any, token: object, epoch: int
    ) -> None:
        try:
            outcome: InvokeResult | AcceptedJob | BaaSError = await invoke(name, item)
        except BaaSError as exc:
            outcome = exc
        except Exception as exc:  # bad arguments (params not JSON...): a bug, stop it all
            limit.release(token, pushed_back=False, epoch=epoch)
            failure.append(exc)
            tg.cancel_scope.cancel()
            return
        limit.release(token, pushed_back=_pushed_back(outcome), epoch=epoch)
        if isinstance(outcome, BaaSError):
            done = ItemResult(index, name, item, error=outcome)
        else:
            done = ItemResult(index, name, item, result=outcome)
        counts["done"] += 1
        counts["failed"] += not done.ok
        if progress is not None:
            progress(counts["done"], counts["failed"], limit.in_flight)
        if fail_fast and isinstance(outcome, BaaSError):
            failure.append(outcome)
            tg.cancel_scope.cancel()
            return
        await send.send(done)

    async def produce(tg: anyio.abc.TaskGroup) -> None:
        entries = _Entries(params)
        async with send, anyio.create_task_group() as calls:
            index = 0
            try:
                while (entry := await entries.next()) is not _END:
                    if function_name is None:
                        name, item = _split_pair(index, entry)
                    else:
                        name, item = function_name, entry
                    await window.acquire()
                    token = object()
                    epoch = await limit.acquire(token)
                    calls.start_soon(run_one, tg, index, name, item, token, epoch)
                    index += 1
            except Exception as exc:  # the input itself failed, or is malformed
                failure.append(exc)
                tg.cancel_scope.cancel()
            finally:
                with anyio.CancelScope(shield=True):
                    await entries.aclose()

    async with receive, anyio.create_task_group() as tg:
        tg.start_soon(produce, tg)
        try:
            yield _Results(receive, window, ordered)
        finally:
            tg.cancel_scope.cancel()
    if failure:
        raise failure[0]


class _Results:
    """The consumer's side: results in input order, or as they complete.

    A class rather than an async generator, so that a consumer leaving the loop early
    leaves no half-run generator behind for the garbage collector.
    """

    def __init__(
        self,
        receive: anyio.abc.ObjectReceiveStream[ItemResult],
        window: anyio.Semaphore,
        ordered: bool,
    ) -> None:
        self._receive = receive
        self._window = window
        self._ordered = ordered
        self._waiting: dict[int, ItemResult] = {}
        self._next = 0

    def __aiter__(self) -> _Results:
        return self

    async def __anext__(self) -> ItemResult:
        while True:
            if self._ordered and self._next in self._waiting:
                done = self._waiting.pop(self._next)
                self._next += 1
                self._window.release()
                return done
            try:
                done = await self._receive.receive()
            except anyio.EndOfStream:
                raise StopAsyncIteration from None
            if not self._ordered:
                self._window.release()
                return done
            self._waiting[done.index] = done


def _split_pair(index: int, entry: Any) -> tuple[str, Any]:
    """``(function_name, params)`` from a mixed-call input, checked."""
    if not (isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[0], str)):
        raise TypeError(
            f"with function_name=None every input must be a (function_name, params) tuple; "
            f"input {index} is {entry!r}"
        )
    return entry[0], entry[1]
