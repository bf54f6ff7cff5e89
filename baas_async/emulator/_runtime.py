"""Finding, loading and running cloud functions for the emulator.

The emulator asks each `Runtime` in turn whether it has a function called *name*
(`Runtime.find`), then hands the located `FunctionSource` back to the same runtime to run
(`Runtime.run`). Only `PythonRuntime` (``<dir>/<name>.py``) exists today; a Node.js runtime
for ``<dir>/<name>.js`` fits the same protocol (spawn ``node``, pass the event as JSON,
read the reply) without touching the HTTP layer.

A runtime never raises for a failure of the function itself: it returns an `Outcome` whose
``reply`` is the platform's ``{"code", "data", "error"}`` body and whose ``status`` is the
job status to record.
"""

from __future__ import annotations

import inspect
import itertools
import os
import re
import stat
import sys
import traceback
import types
from collections.abc import Callable
from typing import Any, Literal, Protocol

import anyio
import anyio.to_thread
from attrs import frozen

__all__ = [
    "FUNCTION_NAME",
    "FunctionSource",
    "Outcome",
    "OutcomeStatus",
    "PythonRuntime",
    "Runtime",
    "deadline_reply",
    "failure_reply",
    "success_reply",
]

#: Valid cloud-function names. Compiled once: it is matched on every invocation.
FUNCTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")

OutcomeStatus = Literal["fulfilled", "execution_failed", "deadline_exceeded"]


@frozen
class FunctionSource:
    """A function file found by a runtime, identified down to its current version."""

    name: str
    #: The file's path, a plain string: building a Path per call costs more than it helps.
    path: str
    #: ``(st_mtime_ns, st_size, st_ino)``: changes whenever the file is rewritten, even
    #: within the file system's timestamp granularity.
    version: tuple[int, int, int]


@frozen
class Outcome:
    """What running a function produced: the job status and the reply body."""

    status: OutcomeStatus
    reply: dict[str, Any]


class Runtime(Protocol):
    """How the emulator finds and runs the cloud functions of one language."""

    def find(self, name: str) -> FunctionSource | None:
        """Return the function called *name* (already validated), or None if absent.

        Called once per invocation, so it should cost at most one ``stat``.
        """
        ...

    async def run(
        self, source: FunctionSource, event: dict[str, Any], time_limit: float
    ) -> Outcome:
        """Run the function on *event*, giving it *time_limit* seconds."""
        ...


def success_reply(value: Any) -> dict[str, Any]:
    """The platform's reply body for a function that returned *value*."""
    return {"code": 0, "data": value, "error": {}}


def failure_reply(
    exc: BaseException, *, message: str | None = None, stack: str | None = None
) -> dict[str, Any]:
    """The platform's reply body for a function that failed with *exc*.

    *message* defaults to ``str(exc)``; *stack* to the bare exception line, since a
    traceback through the emulator's own frames means nothing to a function's author.
    """
    if stack is None:
        stack = "".join(traceback.format_exception_only(type(exc), exc))
    return {
        "code": 1,
        "data": None,
        "error": {
            "message": str(exc) if message is None else message,
            "stack": stack,
            "type": type(exc).__name__,
        },
    }


def deadline_reply(time_limit: float) -> dict[str, Any]:
    """The platform's reply body for a function that overran *time_limit* seconds."""
    return {
        "code": 1,
        "data": None,
        "error": {
            "message": f"function timed out after {round(time_limit * 1000)} ms",
            "type": "deadline_exceeded",
        },
    }


@frozen
class _Loaded:
    version: tuple[int, int, int]
    main: Callable[[dict[str, Any]], Any]
    is_async: bool


# Distinguishes the sys.modules entries of separate PythonRuntime instances, so two
# emulators serving different directories never share a module.
_instance_counter = itertools.count()


class PythonRuntime:
    """Runs ``<functions_dir>/<name>.py`` modules that define ``main(event)``.

    A module is imported on first use and kept, like a warm container: module-level state
    survives between jobs. It is imported again when the file changes. ``async def main``
    runs on the event loop; a plain ``def main`` runs in a worker thread so that blocking
    code (``time.sleep``, blocking I/O) does not stall the emulator.
    """

    def __init__(self, functions_dir: str | os.PathLike[str], *, max_threads: int) -> None:
        self._dir = os.fspath(functions_dir)
        self._max_threads = max_threads
        # Created on first use: a limiter belongs to the event loop that first uses it.
        self._thread_limiter: anyio.CapacityLimiter | None = None
        self._modules: dict[str, _Loaded] = {}
        self._module_prefix = f"_baas_emulator_{next(_instance_counter)}_"

    def find(self, name: str) -> FunctionSource | None:
        """Return ``<dir>/<name>.py`` if it is a regular file, else None."""
        path = os.path.join(self._dir, name + ".py")
        try:
            st = os.stat(path)
        except (OSError, ValueError):
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        return FunctionSource(name, path, (st.st_mtime_ns, st.st_size, st.st_ino))

    async def run(
        self, source: FunctionSource, event: dict[str, Any], time_limit: float
    ) -> Outcome:
        """Run ``main(event)`` under *time_limit*; never raises for the function's errors."""
        try:
            loaded = self._load(source)
        # SyntaxError, ImportError, a missing main, sys.exit() at import time, ...
        except (Exception, SystemExit) as exc:
            return Outcome(
                "execution_failed", failure_reply(exc, stack=_user_stack(exc, source.path))
            )

        # move_on_after rather than fail_after: a TimeoutError raised by the function
        # itself must be reported as the function's error, not as our deadline.
        with anyio.move_on_after(time_limit) as scope:
            try:
                if loaded.is_async:
                    value = await loaded.main(event)
                else:
                    if self._thread_limiter is None:
                        # Our own limiter, sized to the concurrency quota: anyio's default
                        # (40 threads) would make sync jobs queue for a thread while their
                        # deadline runs.
                        self._thread_limiter = anyio.CapacityLimiter(self._max_threads)
                    # On overrun the thread cannot be killed: it is abandoned and runs on
                    # in the background until main() returns, its result discarded. The
                    # platform would kill the container; this is the closest we can get.
                    value = await anyio.to_thread.run_sync(
                        loaded.main, event, abandon_on_cancel=True, limiter=self._thread_limiter
                    )
            # SystemExit too: sys.exit() in a function must not stop the emulator.
            except (Exception, SystemExit) as exc:
                return Outcome(
                    "execution_failed", failure_reply(exc, stack=_user_stack(exc, source.path))
                )
        if scope.cancelled_caught:
            return Outcome("deadline_exceeded", deadline_reply(time_limit))
        return Outcome("fulfilled", success_reply(value))

    def _load(self, source: FunctionSource) -> _Loaded:
        cached = self._modules.get(source.name)
        if cached is not None and cached.version == source.version:
            return cached
        # Compile from source ourselves instead of going through importlib's loader: its
        # __pycache__ check works at one-second granularity and would also write .pyc
        # files into the functions directory.
        with open(source.path, "rb") as file:
            code = compile(file.read(), source.path, "exec", dont_inherit=True)
        module_name = self._module_prefix + source.name
        module = types.ModuleType(module_name)
        module.__file__ = source.path
        # Registered like a real import so that dataclasses, pickle and typing.get_type_hints
        # can find the module by name.
        sys.modules[module_name] = module
        try:
            exec(code, module.__dict__)  # noqa: S102 - running user functions is the job
        except BaseException:
            sys.modules.pop(module_name, None)
            raise
        main = getattr(module, "main", None)
        if not callable(main):
            raise TypeError(f"cloud function {source.name!r} does not define main(event)")
        loaded = _Loaded(source.version, main, _is_async(main))
        # Loading is synchronous (no await between the cache check and this store), so two
        # concurrent first calls cannot end up with two copies of the module state.
        self._modules[source.name] = loaded
        return loaded


def _is_async(main: Callable[..., Any]) -> bool:
    """Whether *main* must be awaited, seeing through ``functools.wraps`` decorators.

    A plain-function decorator around ``async def main`` returns a coroutine: calling it in
    a worker thread would be wrong (trio refuses outright).
    """
    if inspect.iscoroutinefunction(main):
        return True
    try:
        return inspect.iscoroutinefunction(inspect.unwrap(main))
    except ValueError:  # a __wrapped__ cycle
        return False


def _user_stack(exc: BaseException, filename: str) -> str:
    """Format *exc*'s traceback starting at the function's own file.

    The frames above it (the emulator, anyio's thread plumbing) mean nothing to the author
    of the function. If the file never appears (a SyntaxError, ``main`` called with the
    wrong arity), only the exception line is kept, for the same reason.
    """
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != filename:
        tb = tb.tb_next
    if tb is None:
        return "".join(traceback.format_exception_only(type(exc), exc))
    return "".join(traceback.format_exception(type(exc), exc, tb))
