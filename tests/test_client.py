"""AsyncBaaS against the emulator over real loopback HTTP, on asyncio and trio."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import anyio
import httpx
import pytest

from baas_async import (
    AcceptedJob,
    AsyncBaaS,
    ClientClosed,
    FunctionError,
    FunctionNotFound,
    InvokeResult,
    Unauthorized,
)
from baas_async.emulator import Emulator

from .conftest import FUNCTIONS, SECRET, USER_TOKEN, ServedEmulator

pytestmark = pytest.mark.anyio


async def test_invoke_returns_the_function_result(emulator: ServedEmulator) -> None:
    """The platform's own example: helloWorld with name allen says hello allen."""
    async with AsyncBaaS("demo", base_url=emulator.url) as baas:
        result = await baas.invoke("echo", {"name": "allen"})
        hello = await baas.invoke("async_echo", "allen")
    assert isinstance(result, InvokeResult)
    assert result.ok
    assert result.data["data"] == {"name": "allen"}
    assert result.request_id
    assert len(result.request_id) == 32
    assert result.elapsed is not None
    assert result.elapsed > 0
    assert hello.ok


async def test_client_api_identifies_itself(emulator: ServedEmulator) -> None:
    """Client-API calls carry the client id, user token, env id and a baas_async User-Agent."""
    async with AsyncBaaS("demo", base_url=emulator.url, user_token=USER_TOKEN, env_id="t1") as b:
        event = (await b.invoke("echo", [1, 2])).unwrap()
    assert event["data"] == [1, 2]
    assert event["eventType"] == "sdk"
    assert event["miniappId"] == "demo"
    assert event["env"] == {"id": "t1", "name": "t1"}
    assert event["request"]["user"]["id"] == 42
    assert event["request"]["meta"]["user_agent"].startswith("baas_async/")


async def test_anonymous_client_api_call_has_no_user(emulator: ServedEmulator) -> None:
    """Without a user token the call is anonymous and has no environment."""
    async with AsyncBaaS("demo", base_url=emulator.url) as baas:
        event = (await baas.invoke("echo")).unwrap()
    assert event["request"]["user"]["id"] is None
    assert event["env"] is None
    assert event["data"] is None


async def test_function_failure_is_a_result(emulator: ServedEmulator) -> None:
    """A function that raises gives ok=False with its message; unwrap() raises FunctionError."""
    async with AsyncBaaS("demo", base_url=emulator.url) as baas:
        result = await baas.invoke("fail", {"message": "boom"})
    assert not result.ok
    assert result.error is not None
    assert "boom" in result.error.message
    with pytest.raises(FunctionError, match="boom"):
        result.unwrap()


async def test_platform_timeout_differs_from_client_deadline(
    serve_emulator: Callable[..., ServedEmulator],
) -> None:
    """A function overrunning the platform's limit is a result with timed_out, not an error."""
    served = serve_emulator(sync_time_limit=0.2)
    async with AsyncBaaS("demo", base_url=served.url) as baas:
        result = await baas.invoke("slow", {"seconds": 30})
    assert not result.ok
    assert result.timed_out


async def test_async_invocation_is_accepted_and_runs(emulator: ServedEmulator) -> None:
    """sync=False returns an AcceptedJob at once; the job then runs on the platform."""
    async with AsyncBaaS("demo", base_url=emulator.url) as baas:
        accepted = await baas.invoke("echo", {"n": 1}, sync=False)
    assert isinstance(accepted, AcceptedJob)
    await emulator.wait_idle()
    (job,) = emulator.emulator.jobs
    assert (job.sync, job.status, job.data) == (False, "fulfilled", {"n": 1})


async def test_unknown_function_raises_function_not_found(emulator: ServedEmulator) -> None:
    """A 404 from the platform is FunctionNotFound, which never ran anything."""
    async with AsyncBaaS("demo", base_url=emulator.url) as baas:
        with pytest.raises(FunctionNotFound) as info:
            await baas.invoke("no_such_function")
    assert info.value.status == 404
    assert not info.value.may_have_run
    assert info.value.function_name == "no_such_function"


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "names"),
    [
        (("",), {}, ValueError, "function_name"),
        ((None,), {}, TypeError, "function_name"),
        (("echo", {1, 2}), {}, TypeError, "params"),
        (("echo",), {"sync": "false"}, TypeError, "sync"),
        (("echo",), {"timeout": -1}, ValueError, "timeout"),
    ],
)
async def test_bad_arguments_fail_before_any_io(
    emulator: ServedEmulator, args: tuple, kwargs: dict, error: type[Exception], names: str
) -> None:
    """Bad arguments raise TypeError/ValueError naming the argument, and nothing is sent."""
    async with AsyncBaaS("demo", base_url=emulator.url) as baas:
        with pytest.raises(error, match=names):
            await baas.invoke(*args, **kwargs)
    assert emulator.emulator.stats.requests == 0


async def test_open_api_exchanges_credentials_once_for_concurrent_calls(
    emulator: ServedEmulator,
) -> None:
    """Many concurrent first calls cause exactly one OAuth exchange, then all succeed."""
    results: list[InvokeResult] = []
    async with AsyncBaaS("demo", client_secret=SECRET, base_url=emulator.url) as baas:

        async def call(i: int) -> None:
            results.append(await baas.invoke("echo", i))

        async with anyio.create_task_group() as tg:
            for i in range(50):
                tg.start_soon(call, i)
    assert sorted(r.unwrap()["data"] for r in results) == list(range(50))
    assert {r.unwrap()["eventType"] for r in results} == {"open_api"}
    assert emulator.emulator.stats.token_exchanges == 1


async def test_refused_token_is_renewed_once_and_the_call_replayed(
    emulator: ServedEmulator,
) -> None:
    """After a 401, concurrent calls share one renewal, replay once, and succeed."""
    async with AsyncBaaS("demo", client_secret=SECRET, base_url=emulator.url) as baas:
        await baas.invoke("echo")
        emulator.emulator.revoke_tokens()
        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(baas.invoke, "echo")
        assert (await baas.invoke("echo")).ok
        emulator.emulator.revoke_tokens()
        replayed = await baas.invoke("echo")
    assert replayed.attempts == 2  # the refused send counts as an attempt
    assert emulator.emulator.stats.token_exchanges == 3


async def test_ready_access_token_is_used_and_not_renewed(emulator: ServedEmulator) -> None:
    """With access_token= the token is sent as is; a 401 then raises Unauthorized."""
    async with httpx.AsyncClient(base_url=emulator.url, follow_redirects=True) as http:
        credentials = {"client_id": "demo", "client_secret": SECRET}
        code = await http.post("/api/oauth2/hydrogen/openapi/authorize/", json=credentials)
        reply = await http.post(
            "/api/oauth2/access_token/",
            json={**credentials, "code": code.json()["code"], "grant_type": "authorization_code"},
        )
    token = reply.json()["access_token"]
    async with AsyncBaaS("demo", access_token=token, base_url=emulator.url) as baas:
        assert (await baas.invoke("echo")).ok
        emulator.emulator.revoke_tokens()
        with pytest.raises(Unauthorized) as info:
            await baas.invoke("echo")
    assert info.value.status == 401
    assert not info.value.may_have_run


async def test_wrong_secret_raises_unauthorized(emulator: ServedEmulator) -> None:
    """Bad open-API credentials fail the call with Unauthorized, and the secret is not shown."""
    async with AsyncBaaS("demo", client_secret="wrong-secret", base_url=emulator.url) as baas:
        with pytest.raises(Unauthorized) as info:
            await baas.invoke("echo")
    assert "wrong-secret" not in str(info.value)


async def test_closed_client_refuses_calls_and_reopening(emulator: ServedEmulator) -> None:
    """After aclose() every call raises ClientClosed; the client cannot be reopened."""
    baas = AsyncBaaS("demo", base_url=emulator.url)
    assert (await baas.invoke("echo")).ok
    await baas.aclose()
    assert baas.is_closed
    with pytest.raises(ClientClosed):
        await baas.invoke("echo")
    with pytest.raises(ClientClosed):
        async with baas:
            pass
    assert emulator.emulator.stats.requests == 1


async def test_callers_http_client_is_used_and_left_open(emulator: ServedEmulator) -> None:
    """A caller's httpx.AsyncClient carries the calls and is not closed or changed."""
    async with httpx.AsyncClient(headers={"X-Test": "1"}) as http:
        headers_before = dict(http.headers)
        async with AsyncBaaS("demo", base_url=emulator.url, http_client=http) as baas:
            assert (await baas.invoke("echo", "x")).unwrap()["data"] == "x"
        assert not http.is_closed
        assert dict(http.headers) == headers_before
        assert (await http.get(emulator.url + "/")).status_code == 404


async def test_asgi_transport_calls_the_emulator_in_process() -> None:
    """transport=httpx.ASGITransport(emulator) runs calls without sockets."""
    emulator = Emulator(FUNCTIONS)
    async with emulator.running():
        transport = httpx.ASGITransport(app=emulator)
        async with AsyncBaaS("demo", base_url="http://emulator", transport=transport) as baas:
            assert (await baas.invoke("echo", 7)).unwrap()["data"] == 7
            async with AsyncBaaS(
                "demo", client_secret=SECRET, base_url="http://emulator", transport=transport
            ) as open_api:
                assert (await open_api.invoke("echo", 8)).unwrap()["data"] == 8


async def test_invoke_function_is_deprecated(emulator: ServedEmulator) -> None:
    """invoke_function is the same call and warns that it is deprecated."""
    async with AsyncBaaS("demo", base_url=emulator.url) as baas:
        with pytest.warns(DeprecationWarning, match="invoke"):
            result = await baas.invoke_function("echo", 3)
    assert isinstance(result, InvokeResult)
    assert result.unwrap()["data"] == 3


async def test_512_concurrent_calls_share_the_pool(emulator: ServedEmulator) -> None:
    """512 concurrent calls with default settings all succeed over at most 100 connections."""
    results: list[InvokeResult] = []
    async with AsyncBaaS("demo", base_url=emulator.url) as baas:

        async def call(i: int) -> None:
            results.append(await baas.invoke("echo", i))

        async with anyio.create_task_group() as tg:
            for i in range(512):
                tg.start_soon(call, i)
    assert sorted(r.unwrap()["data"] for r in results) == list(range(512))
    assert len(emulator.emulator.stats.clients) <= 100


def test_client_refuses_a_second_event_loop(emulator: ServedEmulator) -> None:
    """A client used on a second asyncio loop says so, instead of failing obscurely."""
    # No idle connections, so the first loop leaves nothing open behind it.
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=0)
    baas = AsyncBaaS("demo", base_url=emulator.url, limits=limits)
    assert asyncio.run(baas.invoke("echo")).ok
    with pytest.raises(RuntimeError, match="one AsyncBaaS per event loop"):
        asyncio.run(baas.invoke("echo"))
    asyncio.run(baas.aclose())


async def test_1000_calls_share_one_renewal_of_an_expired_token(
    serve_emulator: Callable[..., ServedEmulator],
) -> None:
    """1,000 concurrent calls that find the open-API token expired cause exactly one
    exchange, and all succeed."""
    served = serve_emulator(access_token_ttl=3.0)
    results: list[InvokeResult] = []
    async with AsyncBaaS("demo", client_secret=SECRET, base_url=served.url) as baas:
        assert (await baas.invoke("echo")).ok
        # The client renews 10 % before expires_in (0.3 s here): wait for the token to age.
        await anyio.sleep(2.75)

        async def call(i: int) -> None:
            results.append(await baas.invoke("echo", i))

        async with anyio.create_task_group() as tg:
            for i in range(1000):
                tg.start_soon(call, i)
    assert sorted(r.unwrap()["data"] for r in results) == list(range(1000))
    assert served.emulator.stats.token_exchanges == 2
