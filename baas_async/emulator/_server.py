"""Serving the emulator over real sockets with uvicorn.

Imported only by `Emulator.serve`, so that uvicorn stays an optional dependency
(``baas_async[emulator]``).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio
import sniffio
import uvicorn

if TYPE_CHECKING:
    from ._app import Emulator

__all__ = ["serve_app"]


class _Server(uvicorn.Server):
    """A uvicorn server that reports the port it listens on once it accepts connections."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = anyio.Event()
        self.port = 0

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            # The real port: differs from config.port when that was 0 or sockets were given.
            self.port = self.servers[0].sockets[0].getsockname()[1]
            self.listening.set()


async def serve_app(
    app: Emulator,
    *,
    host: str,
    port: int,
    sockets: list[socket.socket] | None,
    started: Callable[[int], None] | None,
) -> None:
    """Run *app* under uvicorn until the calling task is cancelled, then shut down cleanly."""
    if sniffio.current_async_library() != "asyncio":
        raise RuntimeError("Emulator.serve() runs uvicorn, which needs asyncio (not trio)")
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        # None: leave the host application's logging configuration alone; uvicorn's
        # warnings and errors still reach stderr through the logging module's fallback.
        log_config=None,
        log_level="warning",
        access_log=False,
        lifespan="on",
        ws="none",
        proxy_headers=False,
        server_header=False,
        # Longer than clients' usual keep-alive expiry (baas_async's is 15 s), so that the
        # server is not the side that closes idle connections in the middle of a reuse.
        timeout_keep_alive=75,
    )
    server = _Server(config)
    finished = anyio.Event()
    startup_failed = False

    async def run() -> None:
        nonlocal startup_failed
        # Shielded: uvicorn stops through should_exit, which lets it close its sockets,
        # drain connections and run the lifespan shutdown. Cancelling it instead would
        # leave all of that half done.
        with anyio.CancelScope(shield=True):
            try:
                await server.serve(sockets=sockets)
            except SystemExit:
                # uvicorn calls sys.exit() when it cannot bind or the lifespan fails; it
                # has logged why. Not a reason to end the whole process from a library.
                startup_failed = True
            finally:
                server.listening.set()  # also when startup failed: nobody waits forever
                finished.set()

    error: Exception | None = None
    async with anyio.create_task_group() as task_group:
        task_group.start_soon(run)
        try:
            await server.listening.wait()
            if started is not None and server.started:
                started(server.port)
            await finished.wait()
        except Exception as exc:
            # Kept for after the task group, which would wrap it in an ExceptionGroup.
            error = exc
        finally:
            server.should_exit = True
            with anyio.CancelScope(shield=True):
                await finished.wait()
    if error is not None:
        raise error
    if startup_failed:
        where = "the given sockets" if sockets else f"{host}:{port}"
        raise OSError(f"the emulator could not start serving on {where} (see the log)")
