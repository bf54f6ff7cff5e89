"""A local emulator of the 知晓云 (MinApp) cloud-function platform.

`Emulator` is an ASGI application that answers the invoke endpoints of the client API
(``/hserve/...``) and the open API (``/oserve/...``) plus the open API's OAuth token
endpoints, running Python cloud functions (``<name>.py`` defining ``main(event)``) from a
directory with the platform's time limits, concurrency quota and reply bodies.

Use it in-process through ``httpx.ASGITransport`` (no sockets, any anyio backend) or serve
it on a real port with `Emulator.serve` (needs ``baas_async[emulator]``, i.e. uvicorn).
"""

from ._app import Emulator, EmulatorStats, JobRecord

__all__ = ["Emulator", "EmulatorStats", "JobRecord"]
