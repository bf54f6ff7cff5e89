"""Tests for baas_async.emulator: the local imitation of the cloud-function platform."""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from anyio import wait_all_tasks_blocked

from baas_async.emulator import Emulator, EmulatorStats, JobRecord

FUNCTIONS = Path(__file__).parent / "functions"
EXAMPLES = Path(__file__).parent.parent / "examples" / "functions"
HSERVE = "/hserve/v1/cloud-function/job/"
OSERVE_LEGACY = "/oserve/v1/cloud-function/job/"
AUTHORIZE = "/api/oauth2/hydrogen/openapi/authorize/"
ACCESS_TOKEN = "/api/oauth2/access_token/"
CLIENT = {"X-Hydrogen-Client-ID": "demo"}
CREDENTIALS = {"client_id": "demo", "client_secret": "demo-secret"}


def oserve(name: str) -> str:
    """The v1.3 open-API invoke path of function *name*."""
    return f"/oserve/v1.3/cloud-function/{name}/job/"


@asynccontextmanager
async def connect(emulator: Emulator) -> AsyncIterator[httpx.AsyncClient]:
    """Run *emulator* and yield an httpx client talking to it in-process."""
    transport = httpx.ASGITransport(app=emulator)
    async with (
        emulator.running(),
        httpx.AsyncClient(transport=transport, base_url="http://emulator") as client,
    ):
        yield client


async def invoke(client: httpx.AsyncClient, name: str, data: Any = None, **body: Any) -> Any:
    """Call *name* through hserve and return the decoded 200 reply."""
    response = await client.post(
        HSERVE, headers=CLIENT, json={"function_name": name, "data": data, **body}
    )
    assert response.status_code == 200, response.text
    return response.json()


async def get_access_token(client: httpx.AsyncClient) -> str:
    """Run the OAuth flow and return a fresh open-API access token."""
    authorized = await client.post(AUTHORIZE, json=CREDENTIALS, follow_redirects=True)
    exchanged = await client.post(
        ACCESS_TOKEN,
        json={
            **CREDENTIALS,
            "code": authorized.json()["code"],
            "grant_type": "authorization_code",
        },
    )
    token: str = exchanged.json()["access_token"]
    return token


def test_public_names() -> None:
    """The package exports exactly the documented names."""
    import baas_async.emulator as module

    assert module.__all__ == sorted(module.__all__)
    assert module.__all__ == ["Emulator", "EmulatorStats", "JobRecord"]
    assert all(getattr(module, name).__doc__ for name in module.__all__)


@pytest.mark.parametrize(
    "option",
    [
        {"sync_time_limit": 0},
        {"async_time_limit": -1},
        {"concurrency_quota": 0},
        {"access_token_ttl": 0},
        {"schedule_wait": -0.5},
        {"async_time_limit": float("inf")},
        {"access_token_ttl": float("nan")},
    ],
)
def test_rejects_bad_limits(option: dict[str, float]) -> None:
    """Non-positive or non-finite limits are refused at construction."""
    with pytest.raises(ValueError, match=next(iter(option))):
        Emulator(FUNCTIONS, **option)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_hello_world_example() -> None:
    """The example function answers like the platform's sample."""
    async with connect(Emulator(EXAMPLES)) as client:
        reply = await invoke(client, "helloWorld", {"name": "知晓云"})
    assert reply == {"code": 0, "data": "hello 知晓云", "error": {}}


@pytest.mark.anyio
async def test_hserve_event() -> None:
    """A client-API call hands the function the platform's event fields."""
    emulator = Emulator(FUNCTIONS)
    async with connect(emulator) as client:
        response = await client.post(
            HSERVE,
            headers={**CLIENT, "User-Agent": "pytest-agent"},
            json={"function_name": "echo", "data": {"x": [1, "二"]}},
        )
    assert response.headers["content-type"] == "application/json"
    assert int(response.headers["content-length"]) == len(response.content)
    event = response.json()["data"]
    (job,) = emulator.jobs
    assert event == {
        "data": {"x": [1, "二"]},
        "eventType": "sdk",
        "jobId": job.id,
        "memoryLimitInMB": 128,
        "timeLimitInMS": 5000,
        "miniappId": "demo",
        "request": {
            "meta": {"ip_address": "127.0.0.1", "user_agent": "pytest-agent"},
            "user": {"id": None},
        },
        "env": None,
    }
    assert job.function_name == "echo"
    assert job.sync is True
    assert job.source == "sdk"
    assert job.status == "fulfilled"
    assert job.data == {"x": [1, "二"]}
    assert job.result == response.json()
    assert job.started_at is not None
    assert job.finished_at is not None
    assert job.created_at <= job.started_at <= job.finished_at


@pytest.mark.anyio
async def test_hserve_user_and_env() -> None:
    """A user token names the user, and the env header names the environment."""
    emulator = Emulator(FUNCTIONS, user_tokens={"user-token": 42})
    async with connect(emulator) as client:
        response = await client.post(
            HSERVE,
            headers={
                **CLIENT,
                "Authorization": "Hydrogen-r1 user-token",
                "X-Hydrogen-Env-ID": "test-env",
            },
            json={"function_name": "echo"},
        )
    event = response.json()["data"]
    assert event["request"]["user"] == {"id": 42}
    assert event["env"] == {"id": "test-env", "name": "test-env"}
    assert event["data"] is None


@pytest.mark.anyio
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Hydrogen-Client-ID": "someone-else"},
        {**CLIENT, "Authorization": "Hydrogen-r1 unknown-token"},
        {**CLIENT, "Authorization": "Bearer user-token"},
    ],
)
async def test_hserve_auth_errors(headers: dict[str, str]) -> None:
    """A missing or wrong client id, or an unknown user token, is a 401."""
    emulator = Emulator(FUNCTIONS, user_tokens={"user-token": 1})
    async with connect(emulator) as client:
        response = await client.post(HSERVE, headers=headers, json={"function_name": "echo"})
    assert response.status_code == 401
    assert response.json()["status"] == "error"
    assert emulator.jobs == []


@pytest.mark.anyio
async def test_async_main() -> None:
    """An ``async def main`` is awaited."""
    async with connect(Emulator(FUNCTIONS)) as client:
        reply = await invoke(client, "async_echo", [1, 2])
    assert reply["code"] == 0
    assert reply["data"]["data"] == [1, 2]


@pytest.mark.anyio
async def test_function_raises() -> None:
    """An exception becomes a code-1 reply with message, type and the function's stack."""
    emulator = Emulator(FUNCTIONS)
    async with connect(emulator) as client:
        reply = await invoke(client, "fail", {"message": "boom"})
    assert reply["code"] == 1
    assert reply["data"] is None
    error = reply["error"]
    assert error["message"] == "boom"
    assert error["type"] == "ValueError"
    assert "fail.py" in error["stack"]
    assert "_helper" in error["stack"]
    assert "_runtime.py" not in error["stack"]
    assert emulator.jobs[0].status == "execution_failed"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("name", "error_type"), [("unserialisable", "TypeError"), ("no_main", "TypeError")]
)
async def test_unusable_functions(name: str, error_type: str) -> None:
    """A non-JSON return value or a missing main is a code-1 reply, not a crash."""
    emulator = Emulator(FUNCTIONS)
    async with connect(emulator) as client:
        reply = await invoke(client, name)
    assert reply["code"] == 1
    assert reply["error"]["type"] == error_type
    assert emulator.jobs[0].status == "execution_failed"
    assert emulator.jobs[0].result == reply


@pytest.mark.anyio
async def test_wrapped_coroutine_function(tmp_path: Path) -> None:
    """A sync main that returns an awaitable (a decorated coroutine function) is awaited."""
    (tmp_path / "wrapped.py").write_text(
        "import functools\n"
        "async def _impl(event):\n    return 'wrapped'\n"
        "def _decorate(f):\n"
        "    @functools.wraps(f)\n    def inner(event):\n        return f(event)\n"
        "    return inner\n"
        "main = _decorate(_impl)\n"
    )
    async with connect(Emulator(tmp_path)) as client:
        assert (await invoke(client, "wrapped"))["data"] == "wrapped"


@pytest.mark.anyio
async def test_returns_none() -> None:
    """Returning None gives ``data: null`` with code 0."""
    async with connect(Emulator(FUNCTIONS)) as client:
        assert await invoke(client, "returns_none") == {"code": 0, "data": None, "error": {}}


@pytest.mark.anyio
async def test_module_state_survives() -> None:
    """Module-level state persists between jobs, like a warm container."""
    async with connect(Emulator(FUNCTIONS)) as client:
        counts = [(await invoke(client, "counter"))["data"] for _ in range(3)]
    assert counts == [1, 2, 3]


@pytest.mark.anyio
async def test_reload_on_change(tmp_path: Path) -> None:
    """A rewritten function file is imported afresh, state and all."""
    path = tmp_path / "versioned.py"
    path.write_text("n = 0\ndef main(event):\n    global n\n    n += 1\n    return ('v1', n)\n")
    async with connect(Emulator(tmp_path)) as client:
        assert (await invoke(client, "versioned"))["data"] == ["v1", 1]
        assert (await invoke(client, "versioned"))["data"] == ["v1", 2]
        path.write_text(
            "n = 0\ndef main(event):\n    global n\n    n += 1\n    return ('v2', n)\n"
        )
        # Force a different mtime: the rewrite may fall in the same timestamp tick.
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
        assert (await invoke(client, "versioned"))["data"] == ["v2", 1]


@pytest.mark.anyio
@pytest.mark.parametrize("name", ["missing", "bad name", "../functions/echo", "", 7, None])
async def test_function_not_found(name: object) -> None:
    """Unknown, invalid or non-string function names are 404 on hserve."""
    emulator = Emulator(FUNCTIONS)
    async with connect(emulator) as client:
        response = await client.post(HSERVE, headers=CLIENT, json={"function_name": name})
    assert response.status_code == 404
    assert response.json()["error_msg"].startswith("cloud function not found: ")
    assert emulator.jobs == []


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"", "not valid JSON"),
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b'{"function_name": "echo", "data": NaN}', "not valid JSON"),
        (b'["echo"]', "JSON object"),
        (b'{"function_name": "echo", "sync": "yes"}', "sync"),
    ],
)
async def test_bad_request_body(body: bytes, problem: str) -> None:
    """A body that is not a JSON object of the right types is a 400 naming the problem."""
    async with connect(Emulator(FUNCTIONS)) as client:
        response = await client.post(HSERVE, headers=CLIENT, content=body)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert problem in response.json()["error_msg"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("POST", "/hserve/v1/cloud-function/job", 404),
        ("POST", "/nowhere/", 404),
        ("POST", "/oserve/v1.3/cloud-function/a/b/job/", 404),
        ("GET", HSERVE, 405),
        ("PUT", oserve("echo"), 405),
        ("DELETE", AUTHORIZE + "done/", 405),
    ],
)
async def test_routing_errors(method: str, path: str, status: int) -> None:
    """Unknown paths are 404 and wrong methods 405, both with JSON error bodies."""
    emulator = Emulator(FUNCTIONS)
    async with connect(emulator) as client:
        response = await client.request(method, path, headers=CLIENT, json={})
    assert response.status_code == status
    assert response.json()["status"] == "error"
    if status == 405:
        assert "POST" in response.headers["allow"]
    assert emulator.stats.requests == 1


@pytest.mark.anyio
async def test_query_string_ignored() -> None:
    """A query string on an invoke path does not change the route."""
    async with connect(Emulator(FUNCTIONS)) as client:
        response = await client.post(
            HSERVE + "?debug=1", headers=CLIENT, json={"function_name": "returns_none"}
        )
    assert response.json()["code"] == 0


@pytest.mark.anyio
@pytest.mark.parametrize("name", ["slow", "slow_sync"])
async def test_sync_deadline(name: str) -> None:
    """A sync job that overruns its time limit is a code-1 deadline_exceeded reply."""
    emulator = Emulator(FUNCTIONS, sync_time_limit=0.2)
    async with connect(emulator) as client:
        # slow_sync's thread is abandoned, not killed: keep its sleep short.
        reply = await invoke(client, name, {"seconds": 1})
    assert reply == {
        "code": 1,
        "data": None,
        "error": {"message": "function timed out after 200 ms", "type": "deadline_exceeded"},
    }
    assert emulator.jobs[0].status == "deadline_exceeded"


@pytest.mark.anyio
async def test_function_timeout_error_is_not_a_deadline(tmp_path: Path) -> None:
    """A TimeoutError raised by the function is its own failure, not our deadline."""
    (tmp_path / "raises_timeout.py").write_text("def main(event):\n    raise TimeoutError('x')\n")
    emulator = Emulator(tmp_path)
    async with connect(emulator) as client:
        reply = await invoke(client, "raises_timeout")
    assert reply["error"]["type"] == "TimeoutError"
    assert emulator.jobs[0].status == "execution_failed"


@pytest.mark.anyio
async def test_async_job() -> None:
    """``sync: false`` answers at once and runs the job in the background."""
    emulator = Emulator(FUNCTIONS)
    async with connect(emulator) as client:
        reply = await invoke(client, "echo", {"k": "v"}, sync=False)
        assert reply == {"status": "ok"}
        await emulator.wait_idle()
    (job,) = emulator.jobs
    assert job.sync is False
    assert job.status == "fulfilled"
    assert job.result is not None
    assert job.result["data"]["data"] == {"k": "v"}
    assert job.result["data"]["timeLimitInMS"] == 300_000


@pytest.mark.anyio
async def test_async_job_deadline() -> None:
    """A background job that overruns async_time_limit ends as deadline_exceeded."""
    emulator = Emulator(FUNCTIONS, async_time_limit=0.2)
    async with connect(emulator) as client:
        await invoke(client, "slow", {"seconds": 30}, sync=False)
        await emulator.wait_idle()
    assert emulator.jobs[0].status == "deadline_exceeded"


@pytest.mark.anyio
async def test_async_job_needs_running() -> None:
    """Without running() an async job is refused with 503 and no job is recorded."""
    emulator = Emulator(FUNCTIONS)
    transport = httpx.ASGITransport(app=emulator)
    async with httpx.AsyncClient(transport=transport, base_url="http://emulator") as client:
        response = await client.post(
            HSERVE, headers=CLIENT, json={"function_name": "echo", "sync": False}
        )
        assert (await invoke(client, "returns_none"))["code"] == 0
    assert response.status_code == 503
    assert "emulator.running()" in response.json()["error_msg"]
    assert len(emulator.jobs) == 1


@pytest.mark.anyio
async def test_running_is_not_reentrant() -> None:
    """Opening running() twice at once is a programming error."""
    emulator = Emulator(FUNCTIONS)
    async with emulator.running():
        with pytest.raises(RuntimeError, match="already active"):
            async with emulator.running():
                pass


@pytest.mark.anyio
async def test_leaving_running_cancels_jobs() -> None:
    """Jobs still running when running() exits are cancelled and recorded as such."""
    emulator = Emulator(FUNCTIONS)
    async with connect(emulator) as client:
        await invoke(client, "slow", {"seconds": 30}, sync=False)
        await wait_all_tasks_blocked()
    (job,) = emulator.jobs
    assert job.status == "execution_failed"
    assert job.result is not None
    assert job.result["error"]["type"] == "cancelled"
    await emulator.wait_idle()


@pytest.mark.anyio
async def test_concurrency_quota() -> None:
    """When the quota is full a sync job fails to schedule and an async job waits."""
    emulator = Emulator(FUNCTIONS, concurrency_quota=1, schedule_wait=0.1)
    async with connect(emulator) as client:
        await invoke(client, "slow", {"seconds": 30}, sync=False)
        await wait_all_tasks_blocked()
        assert emulator.jobs[0].status == "executing"

        response = await client.post(HSERVE, headers=CLIENT, json={"function_name": "echo"})
        assert response.status_code == 400
        assert response.json() == {
            "status": "error",
            "error_msg": "schedule_failed: concurrency quota of 1 running jobs is full",
        }
        refused = emulator.jobs[1]
        assert refused.status == "schedule_failed"
        assert refused.started_at is None
        assert refused.result is None

        await invoke(client, "echo", sync=False)
        await wait_all_tasks_blocked()
        assert emulator.jobs[2].status == "waiting"
    # Leaving running() cancelled both background jobs; the queued one never started.
    assert emulator.jobs[2].started_at is None
    assert [job.status for job in emulator.jobs] == [
        "execution_failed",
        "schedule_failed",
        "execution_failed",
    ]


@pytest.mark.anyio
async def test_oauth_flow_and_open_api() -> None:
    """The OAuth flow yields a Bearer token that the open-API invoke endpoints accept."""
    emulator = Emulator(FUNCTIONS, access_token_ttl=60)
    async with connect(emulator) as client:
        authorized = await client.post(AUTHORIZE, json=CREDENTIALS, follow_redirects=True)
        assert [r.status_code for r in authorized.history] == [302, 302]
        assert authorized.history[0].headers["location"].startswith(AUTHORIZE + "confirm/?code=")
        assert authorized.status_code == 200
        code = authorized.json()["code"]
        assert authorized.json() == {"code": code, "expires_in": 600}

        exchange = {**CREDENTIALS, "code": code, "grant_type": "authorization_code"}
        token_reply = (await client.post(ACCESS_TOKEN, json=exchange)).json()
        assert token_reply["token_type"] == "Bearer"
        assert token_reply["expires_in"] == 60
        assert token_reply["scope"] == "cloud_function"
        assert token_reply["refresh_token"]
        # Codes are single-use.
        assert (await client.post(ACCESS_TOKEN, json=exchange)).status_code == 401

        bearer = {"Authorization": f"Bearer {token_reply['access_token']}"}
        v13 = await client.post(oserve("echo"), headers=bearer, json={"data": {"a": 1}})
        legacy = await client.post(
            OSERVE_LEGACY, headers=bearer, json={"function_name": "echo", "data": {}}
        )
    assert v13.status_code == 200
    event = v13.json()["data"]
    assert event["eventType"] == "open_api"
    assert event["request"] is None
    assert event["data"] == {"a": 1}
    assert legacy.json()["data"]["eventType"] == "open_api"
    assert [job.source for job in emulator.jobs] == ["open_api", "open_api"]
    assert emulator.stats.authorizations == 1
    assert emulator.stats.token_exchanges == 1


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        (AUTHORIZE, {"client_id": "demo", "client_secret": "wrong"}, 401),
        (AUTHORIZE, {"client_id": "other", "client_secret": "demo-secret"}, 401),
        (ACCESS_TOKEN, {**CREDENTIALS, "code": "nope", "grant_type": "authorization_code"}, 401),
        (ACCESS_TOKEN, {**CREDENTIALS, "code": "nope", "grant_type": "password"}, 400),
        (ACCESS_TOKEN, {"client_id": "demo", "client_secret": "x", "code": "c"}, 401),
        (AUTHORIZE + "confirm/?code=nope", {}, 401),
        (AUTHORIZE + "done/?code=nope", {}, 401),
    ],
)
async def test_oauth_errors(path: str, body: dict[str, str], status: int) -> None:
    """Bad credentials, codes and grant types are refused."""
    emulator = Emulator(FUNCTIONS)
    async with connect(emulator) as client:
        response = await client.post(path, json=body)
    assert response.status_code == status
    assert response.json()["status"] == "error"
    assert emulator.stats.authorizations == 0
    assert emulator.stats.token_exchanges == 0


@pytest.mark.anyio
@pytest.mark.parametrize(
    "authorization", [None, "Bearer not-issued", "Hydrogen-r1 x", "bearer {token}"]
)
async def test_open_api_auth_errors(authorization: str | None) -> None:
    """The open API needs a live Bearer token."""
    async with connect(Emulator(FUNCTIONS)) as client:
        token = await get_access_token(client)
        headers = (
            {} if authorization is None else {"Authorization": authorization.format(token=token)}
        )
        response = await client.post(oserve("echo"), headers=headers, json={"data": {}})
    assert response.status_code == 401


@pytest.mark.anyio
async def test_revoke_and_expiry() -> None:
    """Revoked and expired access tokens are refused with 401."""
    emulator = Emulator(FUNCTIONS)
    async with connect(emulator) as client:
        token = await get_access_token(client)
        bearer = {"Authorization": f"Bearer {token}"}
        assert (await client.post(oserve("echo"), headers=bearer, json={"data": {}})).is_success
        emulator.revoke_tokens()
        response = await client.post(oserve("echo"), headers=bearer, json={"data": {}})
        assert response.status_code == 401

    # A TTL far below the time one request takes: the token is dead on arrival.
    emulator = Emulator(FUNCTIONS, access_token_ttl=1e-9)
    async with connect(emulator) as client:
        bearer = {"Authorization": f"Bearer {await get_access_token(client)}"}
        response = await client.post(oserve("echo"), headers=bearer, json={"data": {}})
    assert response.status_code == 401
    assert response.json()["error_msg"] == "access token expired"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("name", "body", "status"),
    [
        ("echo", {}, 400),
        ("echo", {"data": {}, "sync": 1}, 400),
        ("missing", {"data": {}}, 404),
        ("bad.name", {"data": {}}, 404),
    ],
)
async def test_open_api_request_errors(name: str, body: dict[str, Any], status: int) -> None:
    """The v1.3 endpoint requires ``data`` and an existing, valid function name."""
    async with connect(Emulator(FUNCTIONS)) as client:
        bearer = {"Authorization": f"Bearer {await get_access_token(client)}"}
        response = await client.post(oserve(name), headers=bearer, json=body)
    assert response.status_code == status
    assert response.json()["status"] == "error"


@pytest.mark.anyio
async def test_stats() -> None:
    """Requests, invocations and client addresses are counted."""
    emulator = Emulator(FUNCTIONS)
    assert emulator.stats == EmulatorStats()
    async with connect(emulator) as client:
        await invoke(client, "returns_none")
        await client.post("/nowhere/")
    assert emulator.stats.requests == 2
    assert emulator.stats.invocations == 1
    assert emulator.stats.clients == {("127.0.0.1", 123)}
    assert isinstance(emulator.jobs[0], JobRecord)


@pytest.mark.anyio
async def test_wait_idle_when_idle() -> None:
    """wait_idle returns at once when nothing runs."""
    await Emulator(FUNCTIONS).wait_idle()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_serve_over_loopback() -> None:
    """serve() answers real HTTP on a free port, runs async jobs, and stops when cancelled."""
    emulator = Emulator(FUNCTIONS)
    ports: list[int] = []
    listening = anyio.Event()

    def started(port: int) -> None:
        ports.append(port)
        listening.set()

    async with anyio.create_task_group() as task_group:
        task_group.start_soon(functools.partial(emulator.serve, port=0, started=started))
        await listening.wait()
        base_url = f"http://127.0.0.1:{ports[0]}"
        async with httpx.AsyncClient(base_url=base_url) as client:
            for _ in range(3):
                assert (await invoke(client, "counter"))["code"] == 0
            # The lifespan opened running(): async jobs are accepted.
            assert await invoke(client, "echo", sync=False) == {"status": "ok"}
            await emulator.wait_idle()
        task_group.cancel_scope.cancel()

    assert ports[0] != 0
    assert [job.status for job in emulator.jobs] == ["fulfilled"] * 4
    # Keep-alive: one connection carried all four requests.
    assert len(emulator.stats.clients) == 1
    async with httpx.AsyncClient(base_url=base_url) as client:
        with pytest.raises(httpx.ConnectError):
            await client.post(HSERVE)


@pytest.mark.parametrize("anyio_backend", ["trio"])
@pytest.mark.anyio
async def test_serve_needs_asyncio() -> None:
    """serve() refuses to run uvicorn under trio."""
    with pytest.raises(RuntimeError, match="asyncio"):
        await Emulator(FUNCTIONS).serve(port=0)
