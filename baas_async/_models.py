"""Immutable values that invocations return."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from attrs import field, frozen

from ._exceptions import FunctionError

__all__ = ["AcceptedJob", "FunctionErrorInfo", "InvokeResult"]

#: ``error.type`` with which the platform reports a function that overran its time limit.
#: (It is the job status the open API's job list uses for the same outcome.)
PLATFORM_TIMEOUT_TYPE = "deadline_exceeded"


@frozen
class FunctionErrorInfo:
    """Why a cloud function failed: the reply's ``error`` object.

    ``message`` is the error's text, ``stack`` and ``type`` are ``None`` when the platform
    sent none, and ``extra`` keeps any other fields of the object.
    """

    message: str
    stack: str | None = None
    type: str | None = None
    extra: Mapping[str, Any] = field(factory=dict, repr=False)


@frozen
class InvokeResult:
    """The outcome of a synchronous invocation (``sync=True``).

    A function that failed is a result too, not an exception: check ``ok`` or call
    ``unwrap()``. ``code`` is 0 on success; ``data`` is whatever the function returned (any
    JSON value, ``None`` included); ``error`` is ``None`` on success. ``request_id`` is the
    ``X-Request-Id`` the call sent (the same on every attempt), ``elapsed`` the seconds the
    call took, ``attempts`` how many times it was sent, ``extra`` any reply fields beyond the
    documented three.

    >>> result = InvokeResult("helloWorld", code=0, data="hello allen")
    >>> result.ok, result.unwrap()
    (True, 'hello allen')
    """

    function_name: str
    code: int
    data: Any = None
    error: FunctionErrorInfo | None = None
    request_id: str | None = None
    elapsed: float | None = None
    attempts: int = 1
    extra: Mapping[str, Any] = field(factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        """Whether the function ran and returned normally (``code == 0``)."""
        return self.code == 0

    @property
    def timed_out(self) -> bool:
        """Whether the *platform* stopped the function for overrunning its time limit.

        The client's own deadline raises :class:`InvocationTimeout` instead.
        """
        return self.error is not None and self.error.type == PLATFORM_TIMEOUT_TYPE

    def unwrap(self) -> Any:
        """Return ``data`` on success; raise :class:`FunctionError` when the function failed."""
        if self.code == 0:
            return self.data
        error = self.error or FunctionErrorInfo(message="")
        raise FunctionError(
            f"cloud function {self.function_name!r} failed (code {self.code}): "
            f"{error.message or 'no message'}",
            code=self.code,
            error=error,
            function_name=self.function_name,
            elapsed=self.elapsed,
        )


@frozen
class AcceptedJob:
    """The platform queued an asynchronous invocation (``sync=False``).

    The platform returns no job id; the function runs later, with up to 300 s to finish.
    ``request_id``, ``elapsed`` and ``attempts`` are as in :class:`InvokeResult`.
    """

    function_name: str
    request_id: str | None = None
    elapsed: float | None = None
    attempts: int = 1
    extra: Mapping[str, Any] = field(factory=dict, repr=False)
