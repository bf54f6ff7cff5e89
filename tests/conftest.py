"""Shared pytest configuration: run every anyio test on asyncio and on trio."""

import pytest


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Parametrize ``@pytest.mark.anyio`` tests over both anyio backends."""
    return str(request.param)


# -- the emulator, served over real loopback HTTP ----------------------------------------------

from collections.abc import Callable, Iterator  # noqa: E402
from concurrent.futures import Future  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import anyio  # noqa: E402
from anyio.from_thread import BlockingPortal, start_blocking_portal  # noqa: E402
from attrs import define  # noqa: E402

from baas_async.emulator import Emulator  # noqa: E402

FUNCTIONS = Path(__file__).parent / "functions"
#: A user token the test emulators accept (user id 42).
USER_TOKEN = "user-token-42"
SECRET = "demo-secret"  # the emulator's default client_secret


@define
class ServedEmulator:
    """An emulator serving ``tests/functions`` on a free loopback port in its own thread."""

    emulator: Emulator
    url: str
    portal: BlockingPortal

    async def wait_idle(self) -> None:
        """Wait, without blocking this event loop, until the emulator has no job running."""
        await anyio.to_thread.run_sync(self.portal.call, self.emulator.wait_idle)


@pytest.fixture(scope="session")
def portal() -> Iterator[BlockingPortal]:
    """An asyncio event loop in a thread, where emulators run beside the tests' own loops."""
    with start_blocking_portal("asyncio") as portal:
        yield portal


@pytest.fixture
def serve_emulator(portal: BlockingPortal) -> Iterator[Callable[..., ServedEmulator]]:
    """Start an emulator (keyword arguments go to ``Emulator``); stopped after the test."""
    running: list[Future[Any]] = []

    def start(**kwargs: Any) -> ServedEmulator:
        kwargs.setdefault("user_tokens", {USER_TOKEN: 42})
        emulator = Emulator(kwargs.pop("functions_dir", FUNCTIONS), **kwargs)
        ports: list[int] = []
        ready = portal.call(anyio.Event)
        future = portal.start_task_soon(
            lambda: emulator.serve(port=0, started=lambda port: (ports.append(port), ready.set()))
        )
        running.append(future)
        portal.call(ready.wait)
        return ServedEmulator(emulator, f"http://127.0.0.1:{ports[0]}", portal)

    yield start
    for future in running:
        future.cancel()


@pytest.fixture
def emulator(serve_emulator: Callable[..., ServedEmulator]) -> ServedEmulator:
    """An emulator with default settings, served on loopback."""
    return serve_emulator()
