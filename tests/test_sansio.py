"""The decode layer: (status, headers, body) -> result or typed error, without any I/O."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from baas_async import (
    AcceptedJob,
    BaaSError,
    Forbidden,
    FunctionError,
    FunctionNotFound,
    HTTPStatusError,
    InvalidResponse,
    InvocationRejected,
    InvokeResult,
    PaymentRequired,
    RateLimited,
    ServerError,
    Unauthorized,
)
from baas_async._sansio import (
    check_function_name,
    check_sync,
    check_timeout,
    decode_invoke,
    encode_json,
    hserve_invoke,
    oserve_invoke,
    parse_retry_after,
    read_access_token,
)

JSON = {"content-type": "application/json"}


def decode(status: int, body: object, *, sync: bool = True, headers: dict[str, str] = JSON):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return decode_invoke(status, headers, raw, function_name="fn", sync=sync, request_id="r1")


@pytest.mark.parametrize("data", ["hello allen", None, [1, 2], {"a": {"b": 1}}, 0, False])
def test_success_keeps_any_json_data(data: object) -> None:
    """A code-0 reply returns the function's data, whatever JSON value it is."""
    result = decode(200, {"code": 0, "data": data, "error": {}})
    assert isinstance(result, InvokeResult)
    assert (result.ok, result.data, result.error, result.unwrap()) == (True, data, None, data)
    assert result.request_id == "r1"


def test_unknown_fields_are_kept_and_missing_optional_fields_are_none() -> None:
    """Extra reply fields land in ``extra``; a reply without data/error still decodes."""
    result = decode(200, {"code": 0, "billing_time": 3, "job_id": "j"})
    assert isinstance(result, InvokeResult)
    assert result.data is None
    assert result.extra == {"billing_time": 3, "job_id": "j"}


def test_function_failure_is_a_result_and_unwrap_raises() -> None:
    """code != 0 is a result with the error; unwrap() raises FunctionError with it."""
    error = {"message": "boom", "stack": "at main", "type": "Error", "line": 3}
    result = decode(200, {"code": 1, "data": None, "error": error})
    assert isinstance(result, InvokeResult)
    assert not result.ok
    assert result.error is not None
    assert (result.error.message, result.error.stack, result.error.type) == (
        "boom",
        "at main",
        "Error",
    )
    assert result.error.extra == {"line": 3}
    assert not result.timed_out
    with pytest.raises(FunctionError, match="boom") as info:
        result.unwrap()
    assert info.value.code == 1
    assert info.value.may_have_run


def test_platform_timeout_is_a_result_marked_timed_out() -> None:
    """The platform's own time limit shows as ``timed_out``, not as an exception."""
    error = {"message": "function timed out after 5000 ms", "type": "deadline_exceeded"}
    result = decode(200, {"code": 1, "data": None, "error": error})
    assert isinstance(result, InvokeResult)
    assert result.timed_out


@pytest.mark.parametrize("error", [None, {}, "plain text"])
def test_failure_with_thin_error_still_has_error_info(error: object) -> None:
    """A failed call always carries a FunctionErrorInfo, even when the platform sent little."""
    result = decode(200, {"code": 2, "error": error})
    assert isinstance(result, InvokeResult)
    assert result.error is not None
    assert result.error.message == (error if isinstance(error, str) else "")


def test_async_accepted_is_a_distinct_result() -> None:
    """``{"status": "ok"}`` for sync=False decodes to an AcceptedJob."""
    result = decode(200, {"status": "ok", "queued": True}, sync=False)
    assert isinstance(result, AcceptedJob)
    assert result.extra == {"queued": True}


@pytest.mark.parametrize(
    ("body", "sync"),
    [
        (b"<html><body>Bad gateway</body></html>", True),
        (b'{"code": 0, "data": ', True),
        (b"", True),
        (b"\xff\xfe\x00\xd8garbage", True),
        ([1, 2, 3], True),
        ({"code": "0", "data": 1}, True),
        ({"code": True}, True),
        ({"data": 1}, True),
        ({"code": 0, "error": 5}, True),
        ({"code": 0, "data": "x", "error": {}}, False),
        ({"status": "error"}, False),
    ],
)
def test_undocumented_reply_raises_invalid_response(body: object, sync: bool) -> None:
    """An HTML page, malformed JSON, an undecodable body or a wrong shape is InvalidResponse."""
    with pytest.raises(InvalidResponse) as info:
        decode(200, body, sync=sync)
    assert info.value.status == 200
    assert info.value.may_have_run
    assert info.value.function_name == "fn"


@pytest.mark.parametrize(
    ("status", "error_class", "may_have_run"),
    [
        (401, Unauthorized, False),
        (402, PaymentRequired, False),
        (403, Forbidden, False),
        (404, FunctionNotFound, False),
        (405, HTTPStatusError, False),
        (500, ServerError, True),
        (502, ServerError, True),
        (503, ServerError, False),
        (504, ServerError, True),
    ],
)
def test_status_maps_to_typed_error(
    status: int, error_class: type[HTTPStatusError], may_have_run: bool
) -> None:
    """Each documented status raises its own class, carrying the platform's error_msg."""
    with pytest.raises(error_class) as info:
        decode(status, {"status": "error", "error_msg": "nope"})
    assert type(info.value) is error_class
    assert (info.value.status, info.value.error_msg) == (status, "nope")
    assert info.value.may_have_run is may_have_run
    assert "nope" in str(info.value)


def test_html_502_keeps_an_excerpt_and_no_error_msg() -> None:
    """A proxy's HTML 502 is a ServerError; its body is cut to 1 KiB and never parsed."""
    page = b"<html>" + b"x" * 5000 + b"</html>"
    with pytest.raises(ServerError) as info:
        decode(502, page, headers={"content-type": "text/html"})
    assert info.value.error_msg is None
    assert info.value.body == page[:1024]
    assert "<html>" in str(info.value)


@pytest.mark.parametrize(
    ("error_msg", "may_have_run"),
    [("schedule_failed: concurrency quota full", False), ("execution failed", True)],
)
def test_400_says_whether_the_function_ran(error_msg: str, may_have_run: bool) -> None:
    """A scheduling failure never ran the function; another 400 may have."""
    with pytest.raises(InvocationRejected) as info:
        decode(400, {"status": "error", "error_msg": error_msg})
    assert info.value.may_have_run is may_have_run


@pytest.mark.parametrize(
    ("retry_after", "expected"), [("7", 7.0), ("0.5", 0.5), ("soon", None), (None, None)]
)
def test_429_carries_retry_after(retry_after: str | None, expected: float | None) -> None:
    """A 429 is RateLimited with Retry-After in seconds (None when absent or unreadable)."""
    headers = {} if retry_after is None else {"retry-after": retry_after}
    with pytest.raises(RateLimited) as info:
        decode(429, {"status": "error", "error_msg": "slow down"}, headers=headers)
    assert info.value.retry_after == expected
    assert not info.value.may_have_run


def test_retry_after_http_date() -> None:
    """Retry-After as an HTTP-date becomes seconds from now, never negative."""
    now = datetime(2026, 12, 3, 12, 0, 0, tzinfo=timezone.utc)
    assert parse_retry_after("Thu, 03 Dec 2026 12:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("Thu, 03 Dec 2026 11:00:00 GMT", now=now) == 0.0
    assert parse_retry_after("-5") == 0.0
    assert parse_retry_after("inf") is None


def test_every_error_is_a_baas_error() -> None:
    """Decode errors share the one base class."""
    for status in (400, 401, 402, 403, 404, 429, 500, 418):
        with pytest.raises(BaaSError):
            decode(status, b"")


@pytest.mark.parametrize(
    ("value", "error"), [(None, TypeError), (5, TypeError), ("", ValueError), ("  ", ValueError)]
)
def test_function_name_is_checked(value: object, error: type[Exception]) -> None:
    """A non-str or empty function name is refused, naming the argument."""
    with pytest.raises(error, match="function_name"):
        check_function_name(value)


@pytest.mark.parametrize("value", ["true", 1, None])
def test_sync_must_be_a_bool(value: object) -> None:
    """A truthy non-bool must not pass for sync=True."""
    with pytest.raises(TypeError, match="sync"):
        check_sync(value)


@pytest.mark.parametrize(
    ("value", "error"),
    [(0, ValueError), (-1, ValueError), (float("nan"), ValueError), ("5", TypeError)],
)
def test_timeout_is_checked(value: object, error: type[Exception]) -> None:
    """Deadlines are positive finite seconds or None."""
    with pytest.raises(error, match="timeout"):
        check_timeout(value)
    assert check_timeout(None) is None
    assert check_timeout(2) == 2.0


@pytest.mark.parametrize(
    ("params", "error"), [({1, 2}, TypeError), (float("nan"), ValueError), (object(), TypeError)]
)
def test_params_must_be_json(params: object, error: type[Exception]) -> None:
    """Unserialisable params are refused with the argument's name."""
    with pytest.raises(error, match="params"):
        encode_json(params, name="params")


def test_request_bodies_follow_each_surface() -> None:
    """hserve puts the name in the body; oserve in the quoted path, with data required."""
    path, body = hserve_invoke("helloWorld", None, True)
    assert path == "/hserve/v1/cloud-function/job/"
    assert json.loads(body) == {"function_name": "helloWorld", "sync": True}
    path, body = oserve_invoke("a/b", None, False)
    assert path == "/oserve/v1.3/cloud-function/a%2Fb/job/"
    assert json.loads(body) == {"data": {}, "sync": False}
    assert json.loads(hserve_invoke("f", {"名": "字"}, True)[1])["data"] == {"名": "字"}


def test_absurdly_nested_json_is_invalid_response() -> None:
    """JSON nested past the recursion limit is InvalidResponse, not a RecursionError."""
    with pytest.raises(InvalidResponse):
        decode(200, b"[" * 100_000)
    with pytest.raises(ServerError):
        decode(500, b"[" * 100_000)


@pytest.mark.parametrize("token", ["a\r\nX-Evil: 1", "", "with space", 5])
def test_access_token_must_be_header_safe(token: object) -> None:
    """An access token that cannot go into a header is an InvalidResponse."""
    with pytest.raises(InvalidResponse, match="access_token"):
        read_access_token({"access_token": token, "expires_in": 60}, 200, b"")


def test_huge_timeout_and_dot_names_are_refused() -> None:
    """An int too big for a float is not a deadline; "." and ".." are not function names."""
    with pytest.raises(ValueError, match="timeout"):
        check_timeout(10**400)
    for name in (".", ".."):
        with pytest.raises(ValueError, match="function_name"):
            check_function_name(name)
