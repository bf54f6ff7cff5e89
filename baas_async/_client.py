"""``AsyncBaaS``: the client object."""

from __future__ import annotations

import enum
import os
import platform
import re
import sys
import warnings
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Iterable
from contextlib import AbstractAsyncContextManager
from typing import Any, Literal, overload

import anyio
import httpx

from ._auth import TokenSource
from ._config import (
    DEFAULT_ASYNC_TIMEOUT,
    DEFAULT_LIMITS,
    DEFAULT_MAX_RESPONSE_SIZE,
    DEFAULT_SYNC_TIMEOUT,
    HSERVE_BASE_URL,
    OSERVE_BASE_URL,
    USE_CLIENT_DEFAULT,
    UseClientDefault,
)
from ._exceptions import BaaSError, ClientClosed, InvocationTimeout
from ._many import ItemResult, Progress, fan_out
from ._models import AcceptedJob, InvokeResult
from ._retry import NO_RETRY, RetryBudget, RetryPolicy, backoff, is_testing, retry_reason
from ._sansio import (
    check_function_name,
    check_sync,
    check_timeout,
    decode_invoke,
    hserve_invoke,
    oserve_invoke,
)
from ._transports import Call, HttpxSender, NativeSender, RawResponse, Sender, split_base_url
from ._version import __version__

__all__ = ["AsyncBaaS"]

# Header values must not smuggle in a CR/LF (header injection) or other control characters.
_HEADER_SAFE = re.compile(r"[\x21-\x7e]+")


#: Up to 3 attempts, only where the function provably did not run.
DEFAULT_RETRY = RetryPolicy()


def _check_retry(retry: object) -> RetryPolicy:
    if retry is None:
        return NO_RETRY
    if not isinstance(retry, RetryPolicy):
        raise TypeError(f"retry must be a RetryPolicy or None, got {type(retry).__name__}")
    return retry


class _State(enum.Enum):
    UNOPENED = 1
    OPENED = 2
    CLOSED = 3


def _check_credential(name: str, value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    if not _HEADER_SAFE.fullmatch(value):
        # The value itself may be a secret: describe it, never echo it.
        raise ValueError(
            f"{name} must be non-empty printable ASCII without spaces "
            f"(got {len(value)} characters)"
        )
    return value


class AsyncBaaS:
    """An async client for 知晓云 (MinApp) cloud functions.

    Which HTTP surface it speaks follows from the credentials:

    * **client API** (``/hserve``), acting for an end user:
      ``AsyncBaaS(client_id, user_token=None)``; without a ``user_token`` calls are
      anonymous;
    * **open API** (``/oserve``), for trusted back-ends: ``AsyncBaaS(client_id,
      client_secret=...)`` exchanges the credentials for a token and renews it as needed, or
      ``AsyncBaaS(client_id, access_token=...)`` uses a token you already have.

    ``base_url`` replaces the surface's default host (point it at the emulator in tests);
    ``env_id`` calls a test environment. ``sync_timeout`` / ``async_timeout`` are the default
    deadlines of sync and async calls in seconds (``None``: no deadline). ``limits`` sizes
    the connection pool that all calls share. ``http_client`` (an ``httpx.AsyncClient``) or
    ``transport`` (an httpx transport) replace the built-in connection pool; they are used as
    given and never closed by this object. ``retry`` is the :class:`RetryPolicy` of every
    call (``None``: never retry) and ``retry_budget`` the :class:`RetryBudget` that caps
    retries across all calls. A reply larger than ``max_response_size`` bytes (4 MiB by
    default; ``None``: no limit) raises :class:`ResponseTooLarge` without being read.

    Use it as an async context manager, or call :meth:`aclose` when done::

        async with AsyncBaaS("demo", base_url="http://127.0.0.1:8000") as baas:
            result = await baas.invoke("helloWorld", {"name": "allen"})
            print(result.unwrap())  # hello allen

    One ``AsyncBaaS`` serves one event loop; share it between tasks, not between threads.
    """

    def __init__(
        self,
        client_id: str,
        *,
        user_token: str | None = None,
        client_secret: str | None = None,
        access_token: str | None = None,
        base_url: str | None = None,
        env_id: str | None = None,
        sync_timeout: float | None = DEFAULT_SYNC_TIMEOUT,
        async_timeout: float | None = DEFAULT_ASYNC_TIMEOUT,
        limits: httpx.Limits = DEFAULT_LIMITS,
        retry: RetryPolicy | None = DEFAULT_RETRY,
        retry_budget: RetryBudget | None = None,
        max_response_size: int | None = DEFAULT_MAX_RESPONSE_SIZE,
        http_client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if _check_credential("client_id", client_id) is None:
            raise ValueError("client_id is required")
        _check_credential("user_token", user_token)
        _check_credential("client_secret", client_secret)
        _check_credential("access_token", access_token)
        if client_secret is not None and access_token is not None:
            raise ValueError(
                "give client_secret (tokens are obtained for you) or access_token (a token "
                "you already have), not both"
            )
        if user_token is not None and (client_secret is not None or access_token is not None):
            raise ValueError(
                "user_token is for the client API, client_secret/access_token for the open "
                "API: give one kind of credential"
            )
        if env_id is not None and not isinstance(env_id, str):
            raise TypeError(f"env_id must be a str or None, got {type(env_id).__name__}")
        if env_id is not None and not _HEADER_SAFE.fullmatch(env_id):
            raise ValueError(f"env_id must be printable ASCII without spaces, got {env_id!r}")
        if http_client is not None and transport is not None:
            raise ValueError("give http_client or transport, not both")
        if http_client is not None and not isinstance(http_client, httpx.AsyncClient):
            raise TypeError(
                f"http_client must be an httpx.AsyncClient, got {type(http_client).__name__}"
            )
        if transport is not None and not isinstance(transport, httpx.AsyncBaseTransport):
            raise TypeError(
                f"transport must be an httpx.AsyncBaseTransport, got {type(transport).__name__}"
            )
        if not isinstance(limits, httpx.Limits):
            raise TypeError(f"limits must be an httpx.Limits, got {type(limits).__name__}")
        if retry_budget is not None and not isinstance(retry_budget, RetryBudget):
            raise TypeError(
                f"retry_budget must be a RetryBudget, got {type(retry_budget).__name__}"
            )
        if max_response_size is not None and (
            isinstance(max_response_size, bool)
            or not isinstance(max_response_size, int)
            or max_response_size < 1
        ):
            raise ValueError(
                f"max_response_size must be a positive int or None, got {max_response_size!r}"
            )

        self._open_api = client_secret is not None or access_token is not None
        if base_url is None:
            base_url = OSERVE_BASE_URL if self._open_api else HSERVE_BASE_URL
        if not isinstance(base_url, str):
            raise TypeError(f"base_url must be a str, got {type(base_url).__name__}")
        split_base_url(base_url)
        self._client_id = client_id
        self._base_url = base_url
        self._env_id = env_id
        self._sync_timeout = check_timeout(sync_timeout, name="sync_timeout")
        self._async_timeout = check_timeout(async_timeout, name="async_timeout")
        self._limits = limits
        self._retry = _check_retry(retry)
        self._budget = retry_budget or RetryBudget()
        self._max_response_size = max_response_size
        self._http_client = http_client
        self._transport = transport
        self._user_auth = [("Authorization", f"Hydrogen-r1 {user_token}")] if user_token else []
        self._tokens = (
            TokenSource(client_id, client_secret, access_token, base_url=base_url)
            if self._open_api
            else None
        )
        self._build = oserve_invoke if self._open_api else hserve_invoke
        self._static_headers = self._make_static_headers()
        self._sender: Sender | None = None
        self._closed_event: anyio.Event | None = None
        self._state = _State.UNOPENED

    def _closing(self) -> anyio.Event:
        """Set by :meth:`aclose`, so that calls pausing between attempts stop at once."""
        if self._closed_event is None:
            self._closed_event = anyio.Event()
            if self._state is _State.CLOSED:
                self._closed_event.set()
        return self._closed_event

    def _make_static_headers(self) -> list[tuple[str, str]]:
        headers = [
            ("User-Agent", f"baas_async/{__version__} python/{platform.python_version()}"),
            ("Accept", "application/json"),
            ("Content-Type", "application/json"),
            ("X-Hydrogen-Client-ID", self._client_id),
            ("X-Hydrogen-Client-Version", __version__),
            ("X-Hydrogen-Client-Platform", sys.platform),
            ("X-Hydrogen-Client-SDK-Type", "python"),
        ]
        if self._env_id is not None:
            headers.append(("X-Hydrogen-Env-ID", self._env_id))
        return headers

    def __repr__(self) -> str:
        surface = "open API" if self._open_api else "client API"
        return (
            f"<AsyncBaaS client_id={self._client_id!r} {surface} base_url={self._base_url!r} "
            f"state={self._state.name.lower()}>"
        )

    # -- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> AsyncBaaS:
        if self._state is _State.CLOSED:
            raise ClientClosed("this AsyncBaaS was closed; create a new one", may_have_run=False)
        self._state = _State.OPENED
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections this client opened; with the built-in pool, calls still in
        flight fail with :class:`ClientClosed`. A caller's ``http_client`` or ``transport``
        stays open (and calls in flight on it run to their end)."""
        self._state = _State.CLOSED
        if self._closed_event is not None:
            self._closed_event.set()
        sender, self._sender = self._sender, None
        if sender is not None:
            await sender.aclose()

    @property
    def is_closed(self) -> bool:
        """Whether :meth:`aclose` has been called."""
        return self._state is _State.CLOSED

    def _get_sender(self) -> Sender:
        if self._sender is not None:
            return self._sender
        if self._http_client is not None:
            sender: Sender = HttpxSender(
                self._base_url,
                self._static_headers,
                client=self._http_client,
                max_response_size=self._max_response_size,
            )
        elif self._transport is not None:
            sender = HttpxSender(
                self._base_url,
                self._static_headers,
                transport=self._transport,
                max_response_size=self._max_response_size,
            )
        else:
            sender = NativeSender(
                self._base_url,
                self._static_headers,
                self._limits,
                max_response_size=self._max_response_size,
            )
        self._sender = sender
        return sender

    # -- invoking -----------------------------------------------------------------------------

    @overload
    async def invoke(
        self,
        function_name: str,
        params: Any = None,
        *,
        sync: Literal[True] = True,
        timeout: float | UseClientDefault | None = USE_CLIENT_DEFAULT,
        retry: RetryPolicy | UseClientDefault | None = USE_CLIENT_DEFAULT,
        idempotent: bool | None = None,
    ) -> InvokeResult: ...

    @overload
    async def invoke(
        self,
        function_name: str,
        params: Any = None,
        *,
        sync: Literal[False],
        timeout: float | UseClientDefault | None = USE_CLIENT_DEFAULT,
        retry: RetryPolicy | UseClientDefault | None = USE_CLIENT_DEFAULT,
        idempotent: bool | None = None,
    ) -> AcceptedJob: ...

    @overload
    async def invoke(
        self,
        function_name: str,
        params: Any = None,
        *,
        sync: bool,
        timeout: float | UseClientDefault | None = USE_CLIENT_DEFAULT,
        retry: RetryPolicy | UseClientDefault | None = USE_CLIENT_DEFAULT,
        idempotent: bool | None = None,
    ) -> InvokeResult | AcceptedJob: ...

    async def invoke(
        self,
        function_name: str,
        params: Any = None,
        *,
        sync: bool = True,
        timeout: float | UseClientDefault | None = USE_CLIENT_DEFAULT,
        retry: RetryPolicy | UseClientDefault | None = USE_CLIENT_DEFAULT,
        idempotent: bool | None = None,
    ) -> InvokeResult | AcceptedJob:
        """Invoke a cloud function, as ``wx.BaaS.invoke(functionName, params, sync)`` does.

        ``params`` is any JSON-serialisable value, passed to the function as ``event.data``.
        With ``sync=True`` (the default) the call waits for the function and returns an
        :class:`InvokeResult`; a function that failed is a result with ``ok == False``, not an
        exception. With ``sync=False`` the platform queues the job and the call returns an
        :class:`AcceptedJob` at once.

        ``timeout`` is one deadline in seconds over the whole call (waiting for a pooled
        connection, connecting, sending, receiving, decoding, and a token renewal if one is
        needed); by default the client's ``sync_timeout`` (5 s) or ``async_timeout`` (300 s),
        ``None`` for none. When it passes, :class:`InvocationTimeout` is raised.

        ``retry`` replaces the client's :class:`RetryPolicy` for this call (``None``: no
        retry). By default only outcomes where the function provably did not run are retried,
        inside the deadline; ``idempotent=True`` also replays calls that may have run (see
        :class:`RetryPolicy`). Every attempt sends the same ``X-Request-Id``.

        Bad arguments raise ``TypeError`` or ``ValueError`` before anything is sent; every
        other failure raises a :class:`BaaSError` subclass::

            result = await baas.invoke("helloWorld", {"name": "allen"})
            if result.ok:
                print(result.data)
            else:
                print(result.error.message)
        """
        name = check_function_name(function_name)
        check_sync(sync)
        if timeout is USE_CLIENT_DEFAULT:
            deadline = self._sync_timeout if sync else self._async_timeout
        else:
            deadline = check_timeout(timeout)
        policy = self._retry if retry is USE_CLIENT_DEFAULT else _check_retry(retry)
        if idempotent is None:
            replay = policy.is_idempotent(name)
        elif isinstance(idempotent, bool):
            replay = idempotent
        else:
            raise TypeError(
                f"idempotent must be a bool or None, got {type(idempotent).__name__}: "
                f"{idempotent!r}"
            )
        path, body = self._build(name, params, sync)
        if self._state is _State.CLOSED:
            raise ClientClosed(
                "this AsyncBaaS is closed; create a new one",
                function_name=name,
                may_have_run=False,
            )
        sender = self._get_sender()
        call = Call(name, os.urandom(16).hex(), deadline, traced=sender.traced)
        if deadline is None:
            return await self._attempts(sender, call, path, body, sync, policy, replay)
        try:
            with anyio.fail_after(deadline):
                return await self._attempts(sender, call, path, body, sync, policy, replay)
        except TimeoutError as exc:
            if isinstance(exc, InvocationTimeout):
                raise
            what = (
                "the request was sent, the function may have run"
                if call.may_have_run
                else "nothing was sent"
            )
            error = InvocationTimeout(
                f"cloud function {name!r}: no reply within the {deadline:g} s deadline "
                f"({what}; {call.attempts} attempt{'s' if call.attempts > 1 else ''})",
                function_name=name,
                may_have_run=call.may_have_run,
                elapsed=call.elapsed(),
                timeout=deadline,
            )
            error.attempts = call.attempts
            raise error from exc

    async def _attempts(
        self,
        sender: Sender,
        call: Call,
        path: str,
        body: bytes,
        sync: bool,
        policy: RetryPolicy,
        replay: bool,
    ) -> InvokeResult | AcceptedJob:
        """Send the call, and again while the policy, the budget and the deadline allow."""
        assert call.function_name is not None
        while True:
            failure: BaaSError | InvokeResult
            try:
                response = await self._send(sender, call, path, body)
                outcome = decode_invoke(
                    *response,
                    function_name=call.function_name,
                    sync=sync,
                    request_id=call.request_id,
                    elapsed=call.elapsed(),
                    attempts=call.attempts,
                )
            except BaaSError as exc:
                exc.attempts = call.attempts
                exc.may_have_run = exc.may_have_run or call.earlier_may_have_run
                if call.attempts >= policy.attempts or not retry_reason(exc, replay):
                    raise
                failure = exc
            else:
                if call.attempts >= policy.attempts or not retry_reason(outcome, replay):
                    if call.attempts == 1:
                        self._budget.refund()
                    return outcome
                assert isinstance(outcome, InvokeResult)  # only results are replayed
                failure = outcome
            delay = backoff(policy, call.attempts, failure)
            remaining = call.remaining()
            # A pause past the deadline would only end in a timeout: fail now, with what the
            # platform said (a 429's retry_after included), or when the budget is spent.
            if (remaining is not None and delay >= remaining) or not self._budget.try_spend():
                if isinstance(failure, BaaSError):
                    raise failure
                return failure
            with anyio.move_on_after(0 if is_testing() else delay):
                await self._closing().wait()  # aclose() ends the pause at once
            if self._state is _State.CLOSED:
                raise ClientClosed(
                    "the AsyncBaaS client was closed while the call waited to retry",
                    function_name=call.function_name,
                    may_have_run=call.may_have_run,
                    elapsed=call.elapsed(),
                )
            call.next_attempt(
                previous_may_have_run=(
                    failure.may_have_run if isinstance(failure, BaaSError) else True
                )
            )

    async def _send(self, sender: Sender, call: Call, path: str, body: bytes) -> RawResponse:
        headers = [("X-Request-Id", call.request_id)]
        tokens = self._tokens
        if tokens is None:
            return await sender.send(call, "POST", path, [*self._user_auth, *headers], body)
        token = await self._token(tokens.token(sender, call.timeout), call)
        response = await sender.send(
            call, "POST", path, [("Authorization", f"Bearer {token}"), *headers], body
        )
        if response.status != 401 or not tokens.can_refresh:
            return response
        # The token was refused (revoked, or expired early): renew it once and replay once.
        # A 401 means the platform turned the request away, so the function did not run.
        call.next_attempt(previous_may_have_run=False)
        token = await self._token(tokens.renew(sender, token, call.timeout), call)
        return await sender.send(
            call, "POST", path, [("Authorization", f"Bearer {token}"), *headers], body
        )

    @staticmethod
    async def _token(obtaining: Awaitable[str], call: Call) -> str:
        """Await a token for ``call``; a failure to get one is the call's failure, and the
        function cannot have run."""
        try:
            return await obtaining
        except BaaSError as exc:
            exc.function_name = call.function_name
            exc.may_have_run = False
            raise

    def stream_many(
        self,
        function_name: str | None,
        params: Iterable[Any] | AsyncIterable[Any],
        *,
        concurrency: int | None = None,
        sync: bool = True,
        timeout: float | UseClientDefault | None = USE_CLIENT_DEFAULT,
        retry: RetryPolicy | UseClientDefault | None = USE_CLIENT_DEFAULT,
        idempotent: bool | None = None,
        ordered: bool = True,
        fail_fast: bool = False,
        adaptive: bool = True,
        progress: Progress | None = None,
    ) -> AbstractAsyncContextManager[AsyncIterator[ItemResult]]:
        """Invoke a function once per input, concurrently, and iterate over the results.

        ``params`` is any iterable or async iterable of payloads, consumed lazily: a
        generator of a million items runs in bounded memory. With ``function_name=None``
        each input is a ``(function_name, params)`` pair. Each result is an
        :class:`ItemResult` carrying its input's ``index``; a failed call is a result with
        ``error`` set, unless ``fail_fast=True``, which cancels the calls still running and
        raises the first error.

        At most ``concurrency`` calls are in flight: by default the platform's quota of 100
        jobs, or the pool size if smaller. With ``adaptive=True`` the limit halves when the
        platform pushes back (429, 503, a job that could not be scheduled, a call that
        needed retries) and grows again by about one per round of successful calls, so a
        bulk job settles at the app's quota instead of hammering it. Results come in input
        order (``ordered=True``) or as they complete. ``progress(done, failed, in_flight)``
        is called after each call. ``sync``, ``timeout``, ``retry`` and ``idempotent`` apply
        to every call, as in :meth:`invoke`::

            async with baas.stream_many("resize", ({"id": i} for i in range(10_000))) as results:
                async for item in results:
                    if not item.ok:
                        print(item.index, item.error or item.result)
        """
        if function_name is not None:
            check_function_name(function_name)
        check_sync(sync)
        if timeout is not USE_CLIENT_DEFAULT:
            check_timeout(timeout)
        if retry is not USE_CLIENT_DEFAULT:
            _check_retry(retry)
        if concurrency is None:
            concurrency = min(100, self._limits.max_connections or 100)
        elif isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be a positive int, got {concurrency!r}")
        if not isinstance(params, (Iterable, AsyncIterable)):
            raise TypeError(
                f"params must be an iterable or async iterable, got {type(params).__name__}"
            )

        async def invoke_one(name: str, item: Any) -> InvokeResult | AcceptedJob:
            return await self.invoke(
                name, item, sync=sync, timeout=timeout, retry=retry, idempotent=idempotent
            )

        return fan_out(
            invoke_one,
            function_name,
            params,
            concurrency=concurrency,
            ordered=ordered,
            fail_fast=fail_fast,
            adaptive=adaptive,
            progress=progress,
        )

    async def invoke_many(
        self,
        function_name: str | None,
        params: Iterable[Any] | AsyncIterable[Any],
        *,
        concurrency: int | None = None,
        sync: bool = True,
        timeout: float | UseClientDefault | None = USE_CLIENT_DEFAULT,
        retry: RetryPolicy | UseClientDefault | None = USE_CLIENT_DEFAULT,
        idempotent: bool | None = None,
        ordered: bool = True,
        fail_fast: bool = False,
        adaptive: bool = True,
        progress: Progress | None = None,
    ) -> list[ItemResult]:
        """:meth:`stream_many`, collected into a list (in input order by default)::

        results = await baas.invoke_many("helloWorld", [{"name": n} for n in names])
        greetings = [item.unwrap() for item in results]
        """
        async with self.stream_many(
            function_name,
            params,
            concurrency=concurrency,
            sync=sync,
            timeout=timeout,
            retry=retry,
            idempotent=idempotent,
            ordered=ordered,
            fail_fast=fail_fast,
            adaptive=adaptive,
            progress=progress,
        ) as results:
            return [item async for item in results]

    async def invoke_function(
        self,
        function_name: str,
        params: Any = None,
        *,
        sync: bool = True,
        timeout: float | UseClientDefault | None = USE_CLIENT_DEFAULT,
        retry: RetryPolicy | UseClientDefault | None = USE_CLIENT_DEFAULT,
        idempotent: bool | None = None,
    ) -> InvokeResult | AcceptedJob:
        """Deprecated: the same call as :meth:`invoke` (like ``wx.BaaS.invokeFunction``)."""
        warnings.warn(
            "AsyncBaaS.invoke_function is deprecated; use AsyncBaaS.invoke",
            DeprecationWarning,
            stacklevel=2,
        )
        return await self.invoke(
            function_name, params, sync=sync, timeout=timeout, retry=retry, idempotent=idempotent
        )
