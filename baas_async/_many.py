"""Fan-out: many invocations with bounded, adaptive concurrency (``AsyncBaaS.stream_many``)."""

from __future__ import annotations

import sys
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
from anyio.streams.memory import MemoryObjectSendStream
from attrs import field, frozen

if sys.version_info < (3, 11):  # pragma: no cover - the backport anyio depends on there
    from exceptiongroup import BaseExceptionGroup

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
    """The in-flight limit, with additive increase and multiplicative decrease (like TCP).

    Each call that succeeds at its first attempt raises the limit by ``1 / limit`` (about
    one per round of calls); a call the platform pushed back (429, 503, a job that could
    not be scheduled, or any call that needed a retry) halves it, at most once per round:
    calls started before the last decrease cannot decrease it again. Workers numbered at or
    above the limit wait in :meth:`admit` until it grows back, or until :meth:`finish` says
    there is no more work.
    """

    def __init__(self, ceiling: int, adaptive: bool) -> None:
        self._ceiling = ceiling
        self._adaptive = adaptive
        self._value = float(ceiling)
        self._changed = anyio.Event()
        self._finished = False
        self.epoch = 0
        self.in_flight = 0

    @property
    def limit(self) -> int:
        """Calls allowed in flight now."""
        return max(1, int(self._value))

    async def admit(self, worker: int) -> int | None:
        """Wait until worker number ``worker`` may start a call; returns the call's epoch, or
        ``None`` once the inputs are exhausted."""
        while worker >= self.limit and not self._finished:
            await self._changed.wait()
        return None if self._finished else self.epoch

    def finish(self) -> None:
        """No inputs are left: release every waiting worker."""
        self._finished = True
        self._changed.set()

    def done(self, *, pushed_back: bool, epoch: int) -> None:
        """Account for a finished call."""
        self.in_flight -= 1
        if not self._adaptive:
            return
        before = self.limit
        if pushed_back:
            if epoch == self.epoch:
                self.epoch += 1
                self._value = max(1.0, self._value / 2)
        else:
            self._value = min(float(self._ceiling), self._value + 1 / self._value)
        if self.limit > before:
            self._changed.set()
            self._changed = anyio.Event()


def _pushed_back(outcome: InvokeResult | AcceptedJob | BaaSError) -> bool:
    if isinstance(outcome, (RateLimited, InvocationRejected)):
        return not outcome.may_have_run
    if isinstance(outcome, ServerError):
        return outcome.status == 503
    return outcome.attempts > 1


_END = object()


class _Entries:
    """Hands out the inputs one at a time, numbered, from an iterable or an async iterable;
    closes an async generator input when the fan-out ends early (not leaving it to the GC).
    """

    def __init__(self, items: Iterable[Any] | AsyncIterable[Any]) -> None:
        self._async: AsyncIterator[Any] | None = None
        self._sync: Iterator[Any] | None = None
        # An async iterator must not be advanced by two workers at once.
        self._lock: anyio.Lock | None = None
        if isinstance(items, AsyncIterable):
            self._async = aiter(items)
            self._lock = anyio.Lock()
        else:
            self._sync = iter(items)
        self._count = 0

    async def next(self) -> tuple[int, Any]:
        """``(index, input)``, or ``(-1, _END)`` when the inputs are exhausted."""
        if self._lock is None:
            assert self._sync is not None
            entry = next(self._sync, _END)
        else:
            assert self._async is not None
            async with self._lock:
                try:
                    entry = await anext(self._async)
                except StopAsyncIteration:
                    entry = _END
        if entry is _END:
            return -1, _END
        self._count += 1
        return self._count - 1, entry

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

    ``concurrency`` workers each pull the next input when they are free (so inputs are
    consumed lazily) and at most ``2 * concurrency`` finished results wait for the
    consumer, so memory stays bounded whatever the input's length. A worker per slot,
    rather than a task per input, keeps the fan-out's own cost per call small.
    """
    limit = _AdaptiveLimit(concurrency, adaptive)
    window = anyio.Semaphore(2 * concurrency)
    send, receive = anyio.create_memory_object_stream[ItemResult](2 * concurrency)
    entries = _Entries(params)
    counts = [0, 0]  # done, failed
    # The error that ends the whole fan-out (fail_fast, or a bad input), raised as itself
    # after the task group has stopped rather than wrapped in an exception group.
    failure: list[Exception] = []

    async def work(worker: int, send: _Send) -> None:
        async with send:
            while True:
                epoch = await limit.admit(worker)
                if epoch is None:
                    return
                try:
                    window.acquire_nowait()
                except anyio.WouldBlock:
                    await window.acquire()
                index, entry = await entries.next()
                if entry is _END:
                    limit.finish()
                    return
                limit.in_flight += 1
                if function_name is None:
                    name, item = _split_pair(index, entry)
                else:
                    name, item = function_name, entry
                try:
                    outcome: InvokeResult | AcceptedJob | BaaSError = await invoke(name, item)
                except BaaSError as exc:
                    outcome = exc
                limit.done(pushed_back=_pushed_back(outcome), epoch=epoch)
                if isinstance(outcome, BaaSError):
                    result = ItemResult(index, name, item, error=outcome)
                else:
                    result = ItemResult(index, name, item, result=outcome)
                counts[0] += 1
                counts[1] += not result.ok
                if progress is not None:
                    progress(counts[0], counts[1], limit.in_flight)
                if fail_fast and not result.ok:
                    result.unwrap()  # raises the call's error, or FunctionError
                try:
                    send.send_nowait(result)
                except anyio.WouldBlock:
                    await send.send(result)

    async def run_workers(tg: anyio.abc.TaskGroup) -> None:
        try:
            async with send, anyio.create_task_group() as workers:
                for worker in range(concurrency):
                    workers.start_soon(work, worker, send.clone())
        except BaseExceptionGroup as group:
            # Bad input, a failed input iterator or fail_fast: end everything with the
            # first such error, raised as itself.
            first = _first_error(group)
            if first is None:
                raise
            failure.append(first)
            tg.cancel_scope.cancel()
        finally:
            # Shielded, so that a cancelled fan-out still closes an async generator input;
            # bounded, so that one whose cleanup hangs cannot hang us.
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                await entries.aclose()

    consumer_error: BaseException | None = None
    async with receive, anyio.create_task_group() as tg:
        tg.start_soon(run_workers, tg)
        try:
            yield _Results(receive, window, ordered)
        except BaseException as exc:
            # Raised in the consumer's own loop: re-raised below as itself, not wrapped in
            # an exception group by the task group around it.
            consumer_error = exc
        finally:
            tg.cancel_scope.cancel()
    if failure:  # fail_fast or a bad input; the consumer saw only our cancellation
        raise failure[0]
    if consumer_error is not None:
        raise consumer_error


_Send = MemoryObjectSendStream[ItemResult]


def _first_error(group: BaseExceptionGroup[BaseException]) -> Exception | None:
    """The first plain ``Exception`` in a (nested) group, ignoring cancellations."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found = _first_error(exc)
            if found is not None:
                return found
        elif isinstance(exc, Exception):
            return exc
    return None


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
