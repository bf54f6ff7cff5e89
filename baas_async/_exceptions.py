"""The exceptions baas_async raises, all under one base, :class:`BaaSError`.

Every exception says whether the cloud function *may have run* (``may_have_run``): a caller
deciding whether to try again needs nothing else. ::

    BaaSError
    ├── ClientClosed                 the AsyncBaaS was closed; nothing was sent
    ├── TransportError               no complete HTTP reply
    │   ├── ConnectError             could not connect; never sent
    │   ├── ConnectionLost           the connection broke after the request was sent
    │   ├── InvocationTimeout        the call's deadline passed (also a TimeoutError)
    │   └── ResponseTooLarge         the reply is larger than the client accepts
    ├── HTTPStatusError              the platform answered with a non-2xx status
    │   ├── InvocationRejected       400: scheduling or execution failed
    │   ├── Unauthorized             401: missing, invalid or expired token
    │   ├── PaymentRequired          402: the app's account is in arrears
    │   ├── Forbidden                403
    │   ├── FunctionNotFound         404: no cloud function of that name
    │   ├── RateLimited              429: carries ``retry_after`` (seconds)
    │   └── ServerError              5xx
    ├── InvalidResponse              the reply is not the documented JSON
    └── FunctionError                raised by ``InvokeResult.unwrap()`` when code != 0

Errors of httpx, anyio, httptools and json never escape: they are translated where they occur
(``_transports.py``, ``_sansio.py``), always ``raise ... from exc``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._models import FunctionErrorInfo

__all__ = [
    "BaaSError",
    "ClientClosed",
    "ConnectError",
    "ConnectionLost",
    "Forbidden",
    "FunctionError",
    "FunctionNotFound",
    "HTTPStatusError",
    "InvalidResponse",
    "InvocationRejected",
    "InvocationTimeout",
    "PaymentRequired",
    "RateLimited",
    "ResponseTooLarge",
    "ServerError",
    "TransportError",
    "Unauthorized",
]

#: How much of a reply body an exception keeps, so that a huge HTML page cannot flood logs.
BODY_EXCERPT_LIMIT = 1024


class BaaSError(Exception):
    """Base class of every error baas_async raises.

    ``function_name`` is the cloud function the call was for (``None`` for token exchanges),
    ``may_have_run`` whether the function may have started, ``elapsed`` the seconds the call
    had taken when it failed (``None`` where unknown), ``attempts`` how many times the call
    was sent (retries included).
    """

    def __init__(
        self,
        message: str,
        *,
        function_name: str | None = None,
        may_have_run: bool,
        elapsed: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.function_name = function_name
        self.may_have_run = may_have_run
        self.elapsed = elapsed
        self.attempts = 1

    def __str__(self) -> str:
        return self.message


class ClientClosed(BaaSError, RuntimeError):
    """The :class:`AsyncBaaS` was closed before or during the call."""


class TransportError(BaaSError):
    """No complete HTTP reply arrived."""


class ConnectError(TransportError):
    """The connection could not be opened; the request was never sent."""


class ConnectionLost(TransportError):
    """The connection broke after the request was (at least partly) sent."""


class ResponseTooLarge(TransportError):
    """The reply is larger than ``max_response_size``; it was not read, and its connection was
    closed. ``limit`` is the size allowed in bytes."""

    def __init__(
        self,
        message: str,
        *,
        function_name: str | None,
        elapsed: float,
        limit: int,
    ) -> None:
        super().__init__(message, function_name=function_name, may_have_run=True, elapsed=elapsed)
        self.limit = limit


class InvocationTimeout(TransportError, TimeoutError):
    """The call's client-side deadline passed before a complete reply was decoded.

    This is the client's own deadline. A function that overran the *platform's* limit is
    not an exception: it comes back as an :class:`InvokeResult` whose ``timed_out`` is true.
    ``timeout`` holds the deadline in seconds.
    """

    def __init__(
        self,
        message: str,
        *,
        function_name: str | None,
        may_have_run: bool,
        elapsed: float,
        timeout: float,
    ) -> None:
        super().__init__(
            message, function_name=function_name, may_have_run=may_have_run, elapsed=elapsed
        )
        self.timeout = timeout


class HTTPStatusError(BaaSError):
    """The platform (or a proxy in front of it) answered with a non-2xx status.

    ``status`` is the HTTP status, ``error_msg`` the platform's ``error_msg`` (``None`` when the
    body was not the platform's JSON), ``body`` at most 1 KiB of the raw body, and
    ``retry_after`` the seconds a ``Retry-After`` header asked for (429 and 503; else ``None``).
    """

    def __init__(
        self,
        message: str,
        *,
        status: int,
        error_msg: str | None,
        body: bytes,
        function_name: str | None = None,
        may_have_run: bool,
        elapsed: float | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(
            message, function_name=function_name, may_have_run=may_have_run, elapsed=elapsed
        )
        self.status = status
        self.error_msg = error_msg
        self.body = body[:BODY_EXCERPT_LIMIT]
        self.retry_after = retry_after


class InvocationRejected(HTTPStatusError):
    """HTTP 400: the job could not be scheduled (the quota stayed full) or failed to execute.

    ``may_have_run`` is false when the platform says the job was never scheduled.
    """


class Unauthorized(HTTPStatusError):
    """HTTP 401: the token is missing, invalid or expired."""


class PaymentRequired(HTTPStatusError):
    """HTTP 402: the app's account is in arrears."""


class Forbidden(HTTPStatusError):
    """HTTP 403: the credentials may not call this function."""


class FunctionNotFound(HTTPStatusError):
    """HTTP 404: there is no cloud function with that name."""


class RateLimited(HTTPStatusError):
    """HTTP 429: too many requests. ``retry_after`` is the wait the platform asked for, in
    seconds (``None`` when it gave none)."""


class ServerError(HTTPStatusError):
    """HTTP 5xx: the platform or a proxy failed. Only a 503 says the function did not run."""


class InvalidResponse(BaaSError):
    """The reply is not the documented JSON: an HTML page, malformed JSON, a wrong shape or an
    undecodable encoding. ``status`` and at most 1 KiB of ``body`` are kept."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        body: bytes,
        function_name: str | None = None,
        elapsed: float | None = None,
    ) -> None:
        super().__init__(message, function_name=function_name, may_have_run=True, elapsed=elapsed)
        self.status = status
        self.body = body[:BODY_EXCERPT_LIMIT]


class FunctionError(BaaSError):
    """The cloud function failed (``code != 0``); raised only by ``InvokeResult.unwrap()``.

    ``code`` and ``error`` (a :class:`FunctionErrorInfo`) come from the reply.
    """

    def __init__(
        self,
        message: str,
        *,
        code: int,
        error: FunctionErrorInfo,
        function_name: str | None,
        elapsed: float | None,
    ) -> None:
        super().__init__(message, function_name=function_name, may_have_run=True, elapsed=elapsed)
        self.code = code
        self.error = error
