"""The ``baas-async`` command: ``invoke``, ``serve`` and ``demo``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

from ._client import AsyncBaaS
from ._config import USE_CLIENT_DEFAULT
from ._exceptions import BaaSError
from ._models import AcceptedJob, InvokeResult
from ._version import __version__

__all__ = ["main"]

_ENV_HELP = (
    "Credentials come from the flags or from BAAS_CLIENT_ID, BAAS_CLIENT_SECRET, "
    "BAAS_ACCESS_TOKEN, BAAS_USER_TOKEN and BAAS_BASE_URL. Prefer the environment for "
    "secrets: command lines are visible to other users of the machine."
)


class _CLIError(Exception):
    """A failure to report as one line on stderr."""


def examples_dir() -> Path:
    """Where the bundled example functions are: inside the installed package, or in a
    source checkout's ``examples/functions``."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_examples" / "functions", here.parent / "examples" / "functions"):
        if (candidate / "helloWorld.py").is_file():
            return candidate
    raise _CLIError("the bundled example functions are missing from this installation")


def _result_json(result: InvokeResult | AcceptedJob) -> dict[str, Any]:
    if isinstance(result, AcceptedJob):
        return {"status": "ok", "request_id": result.request_id, "elapsed": result.elapsed}
    error: dict[str, Any] = {}
    if result.error is not None:
        error = {"message": result.error.message, "stack": result.error.stack}
        error["type"] = result.error.type
    return {
        "code": result.code,
        "data": result.data,
        "error": error,
        "request_id": result.request_id,
        "elapsed": round(result.elapsed or 0.0, 6),
    }


def _parse_params(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise _CLIError(f"PARAMS is not valid JSON ({exc}): {text!r}") from exc


def _client_from(args: argparse.Namespace) -> AsyncBaaS:
    env = os.environ
    client_id = args.client_id or env.get("BAAS_CLIENT_ID")
    if not client_id:
        raise _CLIError("no client id: pass --client-id or set BAAS_CLIENT_ID")
    try:
        return AsyncBaaS(
            client_id,
            client_secret=args.client_secret or env.get("BAAS_CLIENT_SECRET") or None,
            access_token=args.access_token or env.get("BAAS_ACCESS_TOKEN") or None,
            user_token=args.user_token or env.get("BAAS_USER_TOKEN") or None,
            base_url=args.base_url or env.get("BAAS_BASE_URL") or None,
            env_id=args.env,
        )
    except (TypeError, ValueError) as exc:
        raise _CLIError(str(exc)) from exc


async def _invoke(args: argparse.Namespace) -> int:
    params = _parse_params(args.params)
    async with _client_from(args) as baas:
        try:
            result = await baas.invoke(
                args.name, params, sync=not args.async_, timeout=args.timeout
            )
        except (TypeError, ValueError) as exc:
            raise _CLIError(str(exc)) from exc
    print(json.dumps(_result_json(result), ensure_ascii=False))
    if isinstance(result, InvokeResult) and not result.ok:
        message = result.error.message if result.error else ""
        print(f"error: cloud function {args.name!r} failed: {message}", file=sys.stderr)
        return 1
    return 0


async def _serve(args: argparse.Namespace) -> int:
    from .emulator import Emulator

    functions = Path(args.dir)
    emulator = Emulator(functions)

    def started(port: int) -> None:
        print(
            f"emulator: serving {functions} on http://{args.host}:{port} "
            "(client_id 'demo', client_secret 'demo-secret'); Ctrl-C stops it",
            flush=True,
        )

    await emulator.serve(host=args.host, port=args.port, started=started)
    return 0


async def _demo(args: argparse.Namespace) -> int:
    from .emulator import Emulator

    emulator = Emulator(examples_dir())
    ready = anyio.Event()
    ports: list[int] = []

    def started(port: int) -> None:
        ports.append(port)
        ready.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: emulator.serve(port=0, started=started))
        with anyio.fail_after(10):
            await ready.wait()
        base_url = f"http://127.0.0.1:{ports[0]}"
        print(f"emulator: serving the bundled examples on {base_url}")
        params = {"name": "allen"}
        async with AsyncBaaS("demo", base_url=base_url) as baas:
            result = await baas.invoke("helloWorld", params)
        print(f"client API: invoke('helloWorld', {json.dumps(params)}) -> {result.unwrap()}")
        # The emulator's well-known demo credentials, not a secret.
        secret = "demo-secret"  # noqa: S105
        async with AsyncBaaS("demo", client_secret=secret, base_url=base_url) as baas:
            result = await baas.invoke("helloWorld", params)
        print(f"open API:   invoke('helloWorld', {json.dumps(params)}) -> {result.unwrap()}")
        tg.cancel_scope.cancel()
    print("emulator: stopped")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="baas-async",
        description="Invoke 知晓云 (MinApp) cloud functions, or serve the local emulator.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    invoke = commands.add_parser(
        "invoke", help="invoke a cloud function and print the result as JSON", epilog=_ENV_HELP
    )
    invoke.add_argument("name", help="the cloud function's name")
    invoke.add_argument("params", nargs="?", help="the payload, as JSON (event.data)")
    invoke.add_argument(
        "--async", dest="async_", action="store_true", help="queue the job, do not wait"
    )
    invoke.add_argument(
        "--timeout",
        type=float,
        default=USE_CLIENT_DEFAULT,
        help="deadline in seconds (default: 5 for sync calls, 300 with --async)",
    )
    invoke.add_argument("--env", default=None, help="test environment id (X-Hydrogen-Env-ID)")
    invoke.add_argument("--base-url", default=None, help="the platform's URL")
    invoke.add_argument("--client-id", default=None)
    invoke.add_argument("--client-secret", default=None, help="selects the open API")
    invoke.add_argument("--access-token", default=None, help="selects the open API")
    invoke.add_argument("--user-token", default=None, help="the client API's user token")

    serve = commands.add_parser("serve", help="serve the emulator for the functions in DIR")
    serve.add_argument("dir", metavar="DIR", help="a directory of <name>.py functions")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--host", default="127.0.0.1", help=argparse.SUPPRESS)

    commands.add_parser(
        "demo", help="serve the bundled examples on a free port, invoke helloWorld, stop"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``baas-async`` command line; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "serve" and not Path(args.dir).is_dir():
        print(f"error: DIR is not a directory: {args.dir!r}", file=sys.stderr)
        return 1
    runner = {"invoke": _invoke, "serve": _serve, "demo": _demo}[args.command]
    try:
        return anyio.run(runner, args)
    except KeyboardInterrupt:
        return 130
    except ModuleNotFoundError as exc:
        if exc.name == "uvicorn":
            print(
                "error: the emulator needs its extra: pip install 'baas_async[emulator]'",
                file=sys.stderr,
            )
            return 1
        raise
    except (_CLIError, BaaSError) as exc:
        kind = "" if isinstance(exc, _CLIError) else f"{type(exc).__name__}: "
        print(f"error: {kind}{exc}", file=sys.stderr)
        return 1
