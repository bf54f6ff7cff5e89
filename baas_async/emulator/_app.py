"""The emulator as a plain ASGI application.

Layers, top to bottom:

- `Emulator.__call__` dispatches ASGI ``http`` and ``lifespan`` scopes;
- ``_http`` reads the whole body, routes on the exact path and method, and sends a JSON
  reply with a content-length (keep-alive friendly);
- the endpoint handlers check credentials, parse the body and raise `_HTTPError` for
  anything the caller got wrong;
- ``_invoke`` / ``_run_job`` create a `JobRecord`, wait for a slot in the concurrency
  quota and hand the function to a `Runtime` (see ``_runtime.py``).

No web framework: routing is a dict lookup, JSON goes through one pre-built stdlib encoder
and decoder, and nothing is compiled per request.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qs

import anyio
import anyio.abc
import anyio.lowlevel
from attrs import Factory, define

from ._runtime import FUNCTION_NAME, FunctionSource, PythonRuntime, Runtime, failure_reply

if TYPE_CHECKING:
    import socket

__all__ = ["Emulator", "EmulatorStats", "JobRecord", "JobSource", "JobStatus"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JobStatus = Literal[
    "waiting", "executing", "fulfilled", "schedule_failed", "execution_failed",
    "deadline_exceeded",
]  # fmt: skip
JobSource = Literal["sdk", "open_api"]

#: The 128 MB plan (P_FREE), whose quota of 100 running jobs is our default.
MEMORY_LIMIT_IN_MB = 128
#: Lifetime of an OAuth authorization code, as the real service reports it.
AUTHORIZATION_CODE_TTL = 600

_HSERVE_JOB = "/hserve/v1/cloud-function/job/"
_OSERVE_LEGACY_JOB = "/oserve/v1/cloud-function/job/"
_OSERVE_PREFIX = "/oserve/v1.3/cloud-function/"
_JOB_SUFFIX = "/job/"
_AUTHORIZE = "/api/oauth2/hydrogen/openapi/authorize/"
_AUTHORIZE_CONFIRM = _AUTHORIZE + "confirm/"
_AUTHORIZE_DONE = _AUTHORIZE + "done/"
_OAUTH_EXCHANGE = "/api/oauth2/access_token/"

_POST = frozenset({"POST"})
_GET_POST = frozenset({"GET", "POST"})


@define
class EmulatorStats:
    """Counters the emulator keeps; tests and benchmarks read (and may reset) them."""

    #: HTTP requests received, whatever their outcome.
    requests: int = 0
    #: Successful calls of ``/api/oauth2/access_token/``.
    token_exchanges: int = 0
    #: Successful first steps of the OAuth flow (``.../openapi/authorize/``).
    authorizations: int = 0
    #: Jobs created (each one is also in `Emulator.jobs`), including schedule failures.
    invocations: int = 0
    #: ASGI ``scope["client"]`` of every HTTP request: ``(host, port)`` pairs, so its size
    #: is the number of distinct connections a client opened.
    clients: set[tuple[str, int]] = Factory(set)


@define(kw_only=True)
class JobRecord:
    """One invocation of a cloud function, sync or async, as the emulator saw it.

    ``status`` moves from ``waiting`` (created, waiting for a slot in the concurrency
    quota) to ``executing`` and then to one of ``fulfilled``, ``execution_failed``,
    ``deadline_exceeded``; or straight from ``waiting`` to ``schedule_failed``. Times are
    unix seconds.
    """

    #: 32 hex digits; also the function's ``event["jobId"]``.
    id: str
    function_name: str
    #: False for ``"sync": false`` jobs, which ran in the background.
    sync: bool
    #: ``"sdk"`` for the client API (hserve), ``"open_api"`` for the server API (oserve).
    source: JobSource
    status: JobStatus = "waiting"
    created_at: float = Factory(time.time)
    started_at: float | None = None
    finished_at: float | None = None
    #: The caller's payload, exactly as sent (None when hserve's ``data`` was absent).
    data: Any = None
    #: The ``{"code", "data", "error"}`` reply, once the function ran; None before that
    #: and for ``schedule_failed`` jobs.
    result: dict[str, Any] | None = None


class _HTTPError(Exception):
    """Ends a request with a ``{"status": "error", "error_msg": ...}`` reply."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# (status, body, headers): handlers return this and `_http` sends it.
_Reply = tuple[int, bytes, list[tuple[bytes, bytes]]]
_Handler = Callable[[Scope, Mapping[bytes, bytes], bytes, str], Awaitable[_Reply]]


def _reject_constant(name: str) -> None:
    # json accepts NaN and Infinity by default; they are not JSON and the reply encoder
    # (allow_nan=False) could not echo them back.
    raise ValueError(f"{name} is not valid JSON")


# Built once: json.dumps/loads with non-default options construct a new coder per call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _dumps(value: Any) -> bytes:
    return _ENCODER.encode(value).encode("utf-8")


def _json_reply(status: int, body: bytes) -> _Reply:
    return status, body, [(b"content-type", b"application/json")]


def _error_reply(status: int, message: str) -> _Reply:
    return _json_reply(status, _dumps({"status": "error", "error_msg": message}))


def _redirect_reply(location: str) -> _Reply:
    return 302, b"", [(b"location", location.encode("ascii"))]


_OK_BODY = _dumps({"status": "ok"})


def _parse_object(body: bytes) -> dict[str, Any]:
    try:
        value = _DECODER.decode(body.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise _HTTPError(400, f"request body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise _HTTPError(400, "request body must be a JSON object")
    return value


def _parse_sync(body: Mapping[str, Any]) -> bool:
    sync = body.get("sync", True)
    if not isinstance(sync, bool):
        raise _HTTPError(400, "sync must be a boolean")
    return sync


def _header_text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8", "replace")


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body, or None if the client went away first."""
    message = await receive()
    if message["type"] != "http.request":
        return None
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        return body
    chunks = [body]
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


class Emulator:
    """A local imitation of the 知晓云 cloud-function and OAuth endpoints, as an ASGI app.

    Functions are Python files in *functions_dir*: ``<name>.py`` defining ``main(event)``
    or ``async def main(event)``. They run as on the platform: a warm module (module-level
    state survives between jobs, reloaded when the file changes), a time limit per job, a
    shared concurrency quota, and the platform's reply bodies.

    Served for real with `serve` (uvicorn), or in-process through httpx:

    .. code-block:: python

        emulator = Emulator("examples/functions")
        async with emulator.running():
            transport = httpx.ASGITransport(app=emulator)
            async with httpx.AsyncClient(transport=transport, base_url="http://emulator") as c:
                reply = await c.post(
                    "/hserve/v1/cloud-function/job/",
                    headers={"X-Hydrogen-Client-ID": "demo"},
                    json={"function_name": "helloWorld", "data": {"name": "MinApp"}},
                )
        assert reply.json()["data"] == "hello MinApp"

    Args:
        functions_dir: where the ``<name>.py`` files live.
        client_id: the app's client id: the only accepted ``X-Hydrogen-Client-ID`` and OAuth
            client; also the functions' ``event["miniappId"]``.
        client_secret: the OAuth client secret.
        access_token_ttl: seconds an open-API access token stays valid (the platform's
            7200).
        sync_time_limit: seconds a sync job may run (the platform's 5).
        async_time_limit: seconds an async job may run, and may wait for a slot in the
            quota (the platform's 300).
        concurrency_quota: jobs that may run at once (100 on the platform's 128 MB plan).
        schedule_wait: seconds a sync job waits for a slot before it fails with 400
            ``schedule_failed`` (the platform retries for about 2).
        user_tokens: accepted ``Authorization: Hydrogen-r1 <token>`` user tokens, mapped to
            the user id a function sees in ``event["request"]["user"]["id"]``. Calls
            without the header are anonymous.
    """

    def __init__(
        self,
        functions_dir: str | os.PathLike[str],
        *,
        client_id: str = "demo",
        client_secret: str = "demo-secret",  # noqa: S107 - a public demo credential
        access_token_ttl: float = 7200.0,
        sync_time_limit: float = 5.0,
        async_time_limit: float = 300.0,
        concurrency_quota: int = 100,
        schedule_wait: float = 2.0,
        user_tokens: Mapping[str, int] | None = None,
    ) -> None:
        for label, value in (
            ("access_token_ttl", access_token_ttl),
            ("sync_time_limit", sync_time_limit),
            ("async_time_limit", async_time_limit),
            ("concurrency_quota", concurrency_quota),
        ):
            # Finite too: the limits are reported in JSON (timeLimitInMS, expires_in).
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{label} must be positive and finite, not {value!r}")
        if not (schedule_wait >= 0 and math.isfinite(schedule_wait)):
            raise ValueError(
                f"schedule_wait must be finite and not negative, not {schedule_wait!r}"
            )

        #: Where the function files are looked up.
        self.functions_dir = Path(functions_dir)
        #: Counters; see `EmulatorStats`.
        self.stats = EmulatorStats()
        #: Every job in creation order, sync and async; see `JobRecord`.
        self.jobs: list[JobRecord] = []

        self._client_id = client_id
        self._client_id_header = client_id.encode("utf-8")
        self._client_secret = client_secret
        self._access_token_ttl = access_token_ttl
        self._sync_time_limit = sync_time_limit
        self._async_time_limit = async_time_limit
        self._schedule_wait = schedule_wait
        self._concurrency_quota = concurrency_quota
        self._user_tokens = dict(user_tokens or {})
        # Runtimes are asked in order; a NodeRuntime for <name>.js would be added here.
        self._runtimes: tuple[Runtime, ...] = (
            PythonRuntime(self.functions_dir, max_threads=concurrency_quota),
        )

        # token / code -> time.monotonic() deadline
        self._access_tokens: dict[str, float] = {}
        self._codes: dict[str, float] = {}

        # Created on first use, inside the event loop that will use them.
        self._quota: anyio.CapacityLimiter | None = None
        self._idle: anyio.Event | None = None
        self._active_jobs = 0
        self._task_group: anyio.abc.TaskGroup | None = None

        self._routes: dict[str, tuple[_Handler, frozenset[str]]] = {
            _HSERVE_JOB: (self._hserve_job, _POST),
            _OSERVE_LEGACY_JOB: (self._oserve_legacy_job, _POST),
            _AUTHORIZE: (self._authorize, _POST),
            _AUTHORIZE_CONFIRM: (self._authorize_confirm, _GET_POST),
            _AUTHORIZE_DONE: (self._authorize_done, _GET_POST),
            _OAUTH_EXCHANGE: (self._access_token, _POST),
        }
        self._oserve_route: tuple[_Handler, frozenset[str]] = (self._oserve_job, _POST)

    # -- public API -------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI 3 entry point: serves ``http`` scopes and handles ``lifespan``.

        The lifespan startup opens `running`, so under an ASGI server async jobs just work.
        Other scope types (websocket) are ignored, which servers answer with a refusal.
        """
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Open the task group in which ``"sync": false`` jobs run.

        Needed for in-process use (httpx's ``ASGITransport`` does not run the ASGI
        lifespan); under an ASGI server the lifespan does it. Without it an async job is
        refused with 503. Leaving the block cancels async jobs still waiting or running
        (they are recorded as ``execution_failed``, error type ``cancelled``): call
        `wait_idle` first to let them finish.

        .. code-block:: python

            async with emulator.running():
                ...  # send requests
                await emulator.wait_idle()
        """
        if self._task_group is not None:
            raise RuntimeError("Emulator.running() is already active")
        if not self._active_jobs:
            # Synchronisation primitives belong to the event loop that made them: start
            # afresh, so that an emulator can be reused from another loop or backend.
            self._quota = None
            self._idle = None
        error: Exception | None = None
        async with anyio.create_task_group() as task_group:
            self._task_group = task_group
            try:
                yield
            except Exception as exc:
                # Re-raised below, outside the task group, which would otherwise wrap the
                # caller's own exception in an ExceptionGroup. Cancellation (a
                # BaseException) is left alone: it must pass through the scopes as is.
                error = exc
            finally:
                self._task_group = None
                # Waiting for background jobs here could take up to async_time_limit
                # (minutes): stopping the emulator stops its jobs instead.
                task_group.cancel_scope.cancel()
        if error is not None:
            raise error

    async def wait_idle(self) -> None:
        """Return once no job is waiting or executing.

        Use it instead of sleeping to wait for ``"sync": false`` jobs to finish.
        """
        while self._active_jobs:
            if self._idle is None:
                self._idle = anyio.Event()
            await self._idle.wait()
        await anyio.lowlevel.checkpoint()

    def revoke_tokens(self) -> None:
        """Invalidate every open-API access token issued so far: using one gives 401."""
        self._access_tokens.clear()

    async def serve(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 8000,
        sockets: list[socket.socket] | None = None,
        started: Callable[[int], None] | None = None,
    ) -> None:
        """Serve the emulator over HTTP with uvicorn until cancelled (asyncio only).

        Args:
            host: interface to listen on; ignored when *sockets* are given.
            port: port to listen on; 0 picks a free one.
            sockets: already bound sockets to serve on instead (uvicorn closes them when
                it stops).
            started: called once with the port actually listened on, when the server
                accepts connections.

        Cancelling the calling task shuts uvicorn down gracefully: in-flight requests
        finish, background jobs are cancelled, the listening sockets are closed.

        .. code-block:: python

            async with anyio.create_task_group() as tg:
                tg.start_soon(functools.partial(emulator.serve, port=0, started=print))
        """
        # Imported here so that the package, and in-process use, need no uvicorn.
        from ._server import serve_app

        await serve_app(self, host=host, port=port, sockets=sockets, started=started)

    # -- ASGI plumbing ----------------------------------------------------------------

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "lifespan.startup":
            return
        if self._task_group is not None:
            # The caller already opened running() around the server: reuse it.
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        async with self.running():
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
        await send({"type": "lifespan.shutdown.complete"})

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        stats = self.stats
        stats.requests += 1
        client = scope.get("client")
        if client:
            stats.clients.add((client[0], client[1]))
        # Read the body whatever the route: an unread body would break keep-alive.
        body = await _read_body(receive)
        if body is None:
            return

        path: str = scope["path"]
        route = self._routes.get(path)
        name = ""
        if route is None and path.startswith(_OSERVE_PREFIX) and path.endswith(_JOB_SUFFIX):
            name = path[len(_OSERVE_PREFIX) : -len(_JOB_SUFFIX)]
            if name and "/" not in name:
                route = self._oserve_route

        if route is None:
            status, payload, headers = _error_reply(404, f"not found: {path}")
        elif scope["method"] not in route[1]:
            status, payload, headers = _error_reply(405, f"method not allowed: {scope['method']}")
            headers.append((b"allow", ", ".join(sorted(route[1])).encode("ascii")))
        else:
            try:
                status, payload, headers = await route[0](
                    scope, dict(scope["headers"]), body, name
                )
            except _HTTPError as exc:
                status, payload, headers = _error_reply(exc.status, exc.message)

        headers.append((b"content-length", str(len(payload)).encode("ascii")))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    # -- invoke endpoints -------------------------------------------------------------

    async def _hserve_job(
        self, scope: Scope, headers: Mapping[bytes, bytes], body: bytes, _name: str
    ) -> _Reply:
        client_id = headers.get(b"x-hydrogen-client-id")
        if client_id is None:
            raise _HTTPError(401, "missing X-Hydrogen-Client-ID header")
        if client_id != self._client_id_header:
            raise _HTTPError(401, "invalid X-Hydrogen-Client-ID")
        user_id: int | None = None
        authorization = headers.get(b"authorization")
        if authorization is not None:
            scheme, _, token = authorization.decode("latin-1").partition(" ")
            user_id = self._user_tokens.get(token.strip()) if scheme == "Hydrogen-r1" else None
            if user_id is None:
                raise _HTTPError(401, "invalid user access token")

        request = _parse_object(body)
        sync = _parse_sync(request)
        client = scope.get("client")
        request_info = {
            "meta": {
                "ip_address": client[0] if client else None,
                "user_agent": _header_text(headers.get(b"user-agent")),
            },
            "user": {"id": user_id},
        }
        return await self._invoke(
            headers, request.get("function_name"), request.get("data"), sync, "sdk", request_info
        )

    async def _oserve_legacy_job(
        self, scope: Scope, headers: Mapping[bytes, bytes], body: bytes, _name: str
    ) -> _Reply:
        self._check_access_token(headers)
        request = _parse_object(body)
        sync = _parse_sync(request)
        return await self._invoke(
            headers, request.get("function_name"), request.get("data"), sync, "open_api", None
        )

    async def _oserve_job(
        self, scope: Scope, headers: Mapping[bytes, bytes], body: bytes, name: str
    ) -> _Reply:
        self._check_access_token(headers)
        request = _parse_object(body)
        if "data" not in request:
            raise _HTTPError(400, 'data is required (send {"data": {}} for no payload)')
        sync = _parse_sync(request)
        return await self._invoke(headers, name, request["data"], sync, "open_api", None)

    def _check_access_token(self, headers: Mapping[bytes, bytes]) -> None:
        authorization = headers.get(b"authorization")
        if authorization is None:
            raise _HTTPError(401, "missing Authorization header")
        scheme, _, token = authorization.decode("latin-1").partition(" ")
        if scheme != "Bearer":
            raise _HTTPError(401, "Authorization must be 'Bearer <access token>'")
        token = token.strip()
        deadline = self._access_tokens.get(token)
        if deadline is None:
            raise _HTTPError(401, "invalid access token")
        if time.monotonic() >= deadline:
            del self._access_tokens[token]
            raise _HTTPError(401, "access token expired")

    def _find(self, name: object) -> tuple[Runtime, FunctionSource]:
        if isinstance(name, str) and FUNCTION_NAME.fullmatch(name) is not None:
            for runtime in self._runtimes:
                source = runtime.find(name)
                if source is not None:
                    return runtime, source
        label = name if isinstance(name, str) else _dumps(name).decode("utf-8")
        raise _HTTPError(404, f"cloud function not found: {label}")

    async def _invoke(
        self,
        headers: Mapping[bytes, bytes],
        name: object,
        data: Any,
        sync: bool,
        source: JobSource,
        request_info: dict[str, Any] | None,
    ) -> _Reply:
        runtime, function = self._find(name)
        task_group = self._task_group
        if not sync and task_group is None:
            raise _HTTPError(503, "emulator not running: use `async with emulator.running()`")

        env_id = _header_text(headers.get(b"x-hydrogen-env-id"))
        time_limit = self._sync_time_limit if sync else self._async_time_limit
        job = JobRecord(
            id=secrets.token_hex(16),
            function_name=function.name,
            sync=sync,
            source=source,
            data=data,
        )
        event = {
            "data": data,
            "eventType": source,
            "jobId": job.id,
            "memoryLimitInMB": MEMORY_LIMIT_IN_MB,
            "timeLimitInMS": round(time_limit * 1000),
            "miniappId": self._client_id,
            "request": request_info,
            "env": {"id": env_id, "name": env_id} if env_id else None,
        }
        self.jobs.append(job)
        self.stats.invocations += 1
        # Counted from here (not from when the job starts) so that wait_idle() right after
        # an async job was accepted does wait for it.
        self._active_jobs += 1

        if task_group is not None and not sync:
            task_group.start_soon(self._run_async_job, job, runtime, function, event)
            return _json_reply(200, _OK_BODY)
        try:
            reply = await self._run_job(
                job, runtime, function, event, self._schedule_wait, time_limit
            )
        finally:
            self._job_done()
        if reply is None:
            raise _HTTPError(
                400,
                "schedule_failed: concurrency quota of "
                f"{self._concurrency_quota} running jobs is full",
            )
        return _json_reply(200, reply)

    async def _run_async_job(
        self, job: JobRecord, runtime: Runtime, function: FunctionSource, event: dict[str, Any]
    ) -> None:
        try:
            await self._run_job(
                job, runtime, function, event, self._async_time_limit, self._async_time_limit
            )
        finally:
            self._job_done()

    async def _run_job(
        self,
        job: JobRecord,
        runtime: Runtime,
        function: FunctionSource,
        event: dict[str, Any],
        schedule_wait: float,
        time_limit: float,
    ) -> bytes | None:
        """Run one job to its final status; the encoded reply, or None if never scheduled."""
        quota = self._quota
        if quota is None:
            quota = self._quota = anyio.CapacityLimiter(self._concurrency_quota)
        # A token per job, not per task: one task may well carry several jobs over time,
        # and the borrower must be unique while the job holds its slot.
        borrower = object()
        try:
            # Try without waiting first: the common case costs no timer, and a free slot
            # is taken even with schedule_wait=0 (a zero timeout would cancel at once).
            acquired = False
            try:
                quota.acquire_on_behalf_of_nowait(borrower)
                acquired = True
            except anyio.WouldBlock:
                with anyio.move_on_after(schedule_wait):
                    await quota.acquire_on_behalf_of(borrower)
                    acquired = True
            if not acquired:
                job.status = "schedule_failed"
                job.finished_at = time.time()
                return None

            job.status = "executing"
            job.started_at = time.time()
            try:
                outcome = await runtime.run(function, event, time_limit)
            finally:
                quota.release_on_behalf_of(borrower)

            result, status = outcome.reply, outcome.status
            try:
                encoded = _dumps(result)
            except (TypeError, ValueError, RecursionError) as exc:
                result = failure_reply(
                    exc, message=f"return value of main() is not JSON serialisable: {exc}"
                )
                status = "execution_failed"
                encoded = _dumps(result)
            job.result = result
            job.status = status
            job.finished_at = time.time()
            return encoded
        finally:
            if job.finished_at is None:
                # Cancelled: the emulator is stopping, or the caller of a sync job went away.
                job.status = "execution_failed"
                job.result = {
                    "code": 1,
                    "data": None,
                    "error": {
                        "message": "the emulator stopped the job before it finished",
                        "type": "cancelled",
                    },
                }
                job.finished_at = time.time()

    def _job_done(self) -> None:
        self._active_jobs -= 1
        if self._active_jobs == 0 and self._idle is not None:
            self._idle.set()
            self._idle = None

    # -- OAuth endpoints --------------------------------------------------------------

    def _check_client(self, request: Mapping[str, Any]) -> None:
        if (
            request.get("client_id") != self._client_id
            or request.get("client_secret") != self._client_secret
        ):
            raise _HTTPError(401, "invalid client_id or client_secret")

    def _live_code(self, scope: Scope) -> str:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        codes = query.get("code")
        code = codes[0] if codes else ""
        deadline = self._codes.get(code)
        if deadline is None or time.monotonic() >= deadline:
            raise _HTTPError(401, "invalid or expired authorization code")
        return code

    async def _authorize(
        self, scope: Scope, headers: Mapping[bytes, bytes], body: bytes, _name: str
    ) -> _Reply:
        self._check_client(_parse_object(body))
        now = time.monotonic()
        # Forget codes nobody exchanged, so that a long run does not accumulate them.
        for stale in [code for code, deadline in self._codes.items() if deadline <= now]:
            del self._codes[stale]
        code = secrets.token_hex(16)
        self._codes[code] = now + AUTHORIZATION_CODE_TTL
        self.stats.authorizations += 1
        # The real service answers through two redirects; relative, like its own.
        return _redirect_reply(f"{_AUTHORIZE_CONFIRM}?code={code}")

    async def _authorize_confirm(
        self, scope: Scope, headers: Mapping[bytes, bytes], body: bytes, _name: str
    ) -> _Reply:
        return _redirect_reply(f"{_AUTHORIZE_DONE}?code={self._live_code(scope)}")

    async def _authorize_done(
        self, scope: Scope, headers: Mapping[bytes, bytes], body: bytes, _name: str
    ) -> _Reply:
        code = self._live_code(scope)
        return _json_reply(200, _dumps({"code": code, "expires_in": AUTHORIZATION_CODE_TTL}))

    async def _access_token(
        self, scope: Scope, headers: Mapping[bytes, bytes], body: bytes, _name: str
    ) -> _Reply:
        request = _parse_object(body)
        self._check_client(request)
        grant_type = request.get("grant_type")
        if grant_type != "authorization_code":
            raise _HTTPError(400, f"unsupported grant_type: {grant_type!r}")
        code = request.get("code")
        # pop: a code is good for one exchange only, even a failed one past its deadline.
        deadline = self._codes.pop(code, None) if isinstance(code, str) else None
        now = time.monotonic()
        if deadline is None or now >= deadline:
            raise _HTTPError(401, "invalid or expired authorization code")

        for stale in [tok for tok, expiry in self._access_tokens.items() if expiry <= now]:
            del self._access_tokens[stale]
        token = secrets.token_hex(20)
        self._access_tokens[token] = now + self._access_token_ttl
        self.stats.token_exchanges += 1
        ttl = self._access_token_ttl
        reply = {
            "access_token": token,
            "token_type": "Bearer",
            # An integral TTL is sent as an int, as the real service does.
            "expires_in": int(ttl) if float(ttl).is_integer() else ttl,
            "refresh_token": secrets.token_hex(20),
            "scope": "cloud_function",
        }
        return _json_reply(200, _dumps(reply))
