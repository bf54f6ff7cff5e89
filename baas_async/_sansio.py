"""Pure functions that build requests and decipher replies: no I/O, no clock reads.

The client moves bytes and applies deadlines; everything about what the bytes mean lives
here, so that it can be tested without a network. Every json error is translated here.
"""

from __future__ import annotations

import email.utils
import json
import math
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, NoReturn
from urllib.parse import quote

from ._exceptions import (
    BODY_EXCERPT_LIMIT,
    Forbidden,
    FunctionNotFound,
    HTTPStatusError,
    InvalidResponse,
    InvocationRejected,
    PaymentRequired,
    RateLimited,
    ServerError,
    Unauthorized,
)
from ._models import AcceptedJob, FunctionErrorInfo, InvokeResult

HSERVE_INVOKE_PATH = "/hserve/v1/cloud-function/job/"
OSERVE_INVOKE_PATH = "/oserve/v1.3/cloud-function/{name}/job/"
AUTHORIZE_PATH = "/api/oauth2/hydrogen/openapi/authorize/"
ACCESS_TOKEN_PATH = "/api/oauth2/access_token/"  # noqa: S105 (a path, not a secret)

_SCHEDULE_FAILED = re.compile(r"\bschedule_failed\b", re.IGNORECASE)
_TOKEN_SAFE = re.compile(r"[\x21-\x7e]+")

_STATUS_ERRORS: dict[int, type[HTTPStatusError]] = {
    400: InvocationRejected,
    401: Unauthorized,
    402: PaymentRequired,
    403: Forbidden,
    404: FunctionNotFound,
}


# -- checking arguments (before any I/O) ------------------------------------------------------


def check_function_name(function_name: object) -> str:
    """Return ``function_name`` if it is a non-empty str; otherwise raise naming the value."""
    if not isinstance(function_name, str):
        raise TypeError(
            f"function_name must be a str, got {type(function_name).__name__}: {function_name!r}"
        )
    if not function_name.strip():
        raise ValueError(f"function_name must not be empty, got {function_name!r}")
    if function_name in (".", ".."):  # would become a dot segment of the open API's path
        raise ValueError(f"function_name {function_name!r} is not a function name")
    return function_name


def check_sync(sync: object) -> bool:
    """Return ``sync`` if it is a bool; a truthy string must not pass for ``True``."""
    if not isinstance(sync, bool):
        raise TypeError(f"sync must be a bool, got {type(sync).__name__}: {sync!r}")
    return sync


def check_timeout(timeout: object, *, name: str = "timeout") -> float | None:
    """Return a positive, finite number of seconds, or ``None`` (no deadline)."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(
            f"{name} must be a number of seconds or None, got {type(timeout).__name__}: "
            f"{timeout!r}"
        )
    try:
        seconds = float(timeout)
    except OverflowError:  # an int too large for a float
        seconds = math.inf
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ValueError(f"{name} must be a positive, finite number of seconds, got {timeout!r}")
    return seconds


def encode_json(value: object, *, name: str) -> bytes:
    """Serialise ``value`` as compact UTF-8 JSON, naming the argument when it cannot be."""
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except TypeError as exc:
        raise TypeError(f"{name} is not JSON-serialisable: {exc}") from exc
    except ValueError as exc:  # NaN/Infinity, or a circular reference
        raise ValueError(f"{name} is not valid JSON: {exc}") from exc
    return text.encode()


# -- building requests --------------------------------------------------------------------------


def hserve_invoke(function_name: str, params: Any, sync: bool) -> tuple[str, bytes]:
    """Path and body of a client-API invocation; ``data`` is left out when there is none."""
    payload: dict[str, Any] = {"function_name": function_name, "sync": sync}
    if params is not None:
        payload["data"] = params
    return HSERVE_INVOKE_PATH, encode_json(payload, name="params")


def oserve_invoke(function_name: str, params: Any, sync: bool) -> tuple[str, bytes]:
    """Path and body of an open-API invocation; the open API requires ``data`` (``{}``)."""
    payload = {"data": {} if params is None else params, "sync": sync}
    path = OSERVE_INVOKE_PATH.format(name=quote(function_name, safe=""))
    return path, encode_json(payload, name="params")


# -- deciphering replies ------------------------------------------------------------------------


def _excerpt(body: bytes) -> str:
    text = body[:200].decode("utf-8", "replace")
    return " ".join(text.split()) + ("…" if len(body) > 200 else "")


def _load_json(
    status: int, body: bytes, *, function_name: str | None, elapsed: float | None
) -> Any:
    try:
        return json.loads(body)
    # JSONDecodeError is a ValueError; absurdly deep nesting exhausts the recursion limit.
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidResponse(
            f"{_subject(function_name)}: HTTP {status} reply is not JSON ({exc}): "
            f"{_excerpt(body)!r}",
            status=status,
            body=body,
            function_name=function_name,
            elapsed=elapsed,
        ) from exc


def _subject(function_name: str | None) -> str:
    return f"cloud function {function_name!r}" if function_name is not None else "token exchange"


def _wrong_shape(
    status: int, body: bytes, what: str, *, function_name: str | None, elapsed: float | None
) -> NoReturn:
    raise InvalidResponse(
        f"{_subject(function_name)}: HTTP {status} reply has the wrong shape ({what}): "
        f"{_excerpt(body)!r}",
        status=status,
        body=body,
        function_name=function_name,
        elapsed=elapsed,
    )


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delta-seconds or an HTTP-date.

    ``None`` for a missing or unreadable value; never negative. ``now`` is for tests.
    """
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; obsolete forms may parse as naive
        when = when.replace(tzinfo=timezone.utc)
    now = now or datetime.now(timezone.utc)
    return max(0.0, (when - now).total_seconds())


def raise_for_status(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    function_name: str | None,
    elapsed: float | None = None,
) -> None:
    """Raise the typed :class:`HTTPStatusError` for a non-2xx status; return for a 2xx one.

    The one place that maps statuses to exceptions. The platform's ``error_msg`` is taken
    from a JSON body when there is one; an HTML page from a proxy is kept only as an excerpt.
    """
    if 200 <= status < 300:
        return
    error_msg: str | None = None
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        document = None
    if isinstance(document, dict) and isinstance(document.get("error_msg"), str):
        error_msg = document["error_msg"]
    detail = error_msg if error_msg is not None else _excerpt(body) or "(empty body)"
    message = f"{_subject(function_name)}: HTTP {status}: {detail}"
    retry_after = parse_retry_after(headers.get("retry-after")) if status in (429, 503) else None
    if status == 429:
        error_class: type[HTTPStatusError] = RateLimited
        may_have_run = False
    elif status >= 500:
        error_class = ServerError
        # Only a 503 says the request was turned away before anything ran.
        may_have_run = status != 503
    else:
        error_class = _STATUS_ERRORS.get(status, HTTPStatusError)
        # A 400 is either a scheduling failure (never ran) or a failed execution. Only the
        # platform's own job status name counts, not any message mentioning "schedule".
        may_have_run = status == 400 and not _SCHEDULE_FAILED.search(error_msg or "")
    raise error_class(
        message,
        status=status,
        error_msg=error_msg,
        body=body,
        function_name=function_name,
        may_have_run=may_have_run,
        elapsed=elapsed,
        retry_after=retry_after,
    )


def _error_info(error: object) -> FunctionErrorInfo | None:
    if error is None or error == {}:
        return None
    if isinstance(error, str):
        return FunctionErrorInfo(message=error)
    assert isinstance(error, dict)
    extra = {k: v for k, v in error.items() if k not in ("message", "stack", "type")}
    message, stack, kind = error.get("message"), error.get("stack"), error.get("type")
    return FunctionErrorInfo(
        message="" if message is None else str(message),
        stack=None if stack is None else str(stack),
        type=None if kind is None else str(kind),
        extra=extra,
    )


def decode_invoke(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    function_name: str,
    sync: bool,
    request_id: str | None = None,
    elapsed: float | None = None,
    attempts: int = 1,
) -> InvokeResult | AcceptedJob:
    """Decipher an invocation reply into an :class:`InvokeResult` (sync) or an
    :class:`AcceptedJob` (async), or raise the typed error it stands for.
    """
    raise_for_status(status, headers, body, function_name=function_name, elapsed=elapsed)
    document = _load_json(status, body, function_name=function_name, elapsed=elapsed)
    if not isinstance(document, dict):
        _wrong_shape(
            status,
            body,
            f"a JSON {type(document).__name__}, not an object",
            function_name=function_name,
            elapsed=elapsed,
        )
    if not sync:
        if document.get("status") != "ok":
            _wrong_shape(
                status, body, 'no "status": "ok"', function_name=function_name, elapsed=elapsed
            )
        extra = {k: v for k, v in document.items() if k != "status"}
        return AcceptedJob(
            function_name, request_id=request_id, elapsed=elapsed, attempts=attempts, extra=extra
        )
    code = document.get("code")
    if isinstance(code, bool) or not isinstance(code, int):
        _wrong_shape(
            status,
            body,
            f'"code" is {code!r}, not an integer',
            function_name=function_name,
            elapsed=elapsed,
        )
    error = document.get("error")
    if not (error is None or isinstance(error, (dict, str))):
        _wrong_shape(
            status,
            body,
            f'"error" is a {type(error).__name__}',
            function_name=function_name,
            elapsed=elapsed,
        )
    info = _error_info(error)
    if code != 0 and info is None:
        info = FunctionErrorInfo(message="")
    extra = {k: v for k, v in document.items() if k not in ("code", "data", "error")}
    return InvokeResult(
        function_name,
        code=code,
        data=document.get("data"),
        error=info if code != 0 else None,
        request_id=request_id,
        elapsed=elapsed,
        attempts=attempts,
        extra=extra,
    )


def decode_token_reply(status: int, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
    """Decipher a reply of the OAuth endpoints into its JSON object, or raise."""
    raise_for_status(status, headers, body, function_name=None)
    document = _load_json(status, body, function_name=None, elapsed=None)
    if not isinstance(document, dict):
        _wrong_shape(status, body, "not a JSON object", function_name=None, elapsed=None)
    return document


def read_access_token(document: Mapping[str, Any], status: int, body: bytes) -> tuple[str, float]:
    """``(access_token, expires_in)`` from an access-token reply, checked."""
    token, expires_in = document.get("access_token"), document.get("expires_in")
    if not isinstance(token, str) or not _TOKEN_SAFE.fullmatch(token):
        # It goes into a header: a CR/LF in it would smuggle in headers of its own.
        _wrong_shape(status, body, "no usable access_token", function_name=None, elapsed=None)
    if isinstance(expires_in, bool) or not isinstance(expires_in, (int, float)):
        _wrong_shape(status, body, "no numeric expires_in", function_name=None, elapsed=None)
    return token, float(expires_in)


def read_code(document: Mapping[str, Any], status: int, body: bytes) -> str:
    """The authorization ``code`` from the authorize step's final reply, checked."""
    code = document.get("code")
    if not isinstance(code, str) or not code:
        _wrong_shape(status, body, "no authorization code", function_name=None, elapsed=None)
    return code


__all__ = [
    "BODY_EXCERPT_LIMIT",
    "check_function_name",
    "check_sync",
    "check_timeout",
    "decode_invoke",
    "decode_token_reply",
    "encode_json",
    "hserve_invoke",
    "oserve_invoke",
    "parse_retry_after",
    "raise_for_status",
    "read_access_token",
    "read_code",
]
