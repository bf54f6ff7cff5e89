"""Fan-out benchmark: ``invoke_many`` over N payloads against the emulator in another process.

    python benchmarks/fanout.py                       # 100,000 calls at concurrency 512
    python benchmarks/fanout.py --calls 5000 --mode stream

Reports calls/s, errors, the client's CPU per call and its peak RSS. The emulator runs
``examples/functions/helloWorld.py`` as a separate process (``python -m baas_async serve``)
on a free loopback port and is stopped by its PID at the end.
"""

from __future__ import annotations

import argparse
import json
import resource
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import anyio

from baas_async import AsyncBaaS

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def payloads(n: int) -> Iterator[dict[str, str]]:
    """N payloads, made lazily."""
    for i in range(n):
        yield {"name": f"user{i}"}


async def run(url: str, calls: int, concurrency: int, mode: str) -> dict[str, object]:
    """Fan out and measure; returns the figures."""
    errors: Counter[str] = Counter()
    ok = 0
    cpu0, t0 = time.process_time(), time.perf_counter()
    async with AsyncBaaS("demo", base_url=url) as baas:
        if mode == "list":
            results = await baas.invoke_many(
                "helloWorld", payloads(calls), concurrency=concurrency
            )
            for item in results:
                if item.ok:
                    ok += 1
                else:
                    errors[type(item.error).__name__ if item.error else "FunctionFailed"] += 1
            del results
        else:
            async with baas.stream_many(
                "helloWorld", payloads(calls), concurrency=concurrency
            ) as stream:
                async for item in stream:
                    if item.ok:
                        ok += 1
                    else:
                        errors[type(item.error).__name__ if item.error else "FunctionFailed"] += 1
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {
        "mode": mode,
        "calls": calls,
        "concurrency": concurrency,
        "ok": ok,
        "errors": dict(errors),
        "seconds": round(wall, 2),
        "calls_per_s": round(calls / wall),
        "client_cpu_us_per_call": round(cpu / calls * 1e6, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> int:
    """Start the emulator, run the fan-out, stop the emulator, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=512)
    parser.add_argument("--mode", choices=["list", "stream"], default="list")
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    args = parser.parse_args()

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "baas_async", "serve", "examples/functions", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        banner = server.stdout.readline()  # printed once the emulator accepts connections
        if "serving" not in banner:
            print(f"the emulator did not start: {banner!r}", file=sys.stderr)
            return 1
        figures = anyio.run(
            run,
            f"http://127.0.0.1:{port}",
            args.calls,
            args.concurrency,
            args.mode,
            backend=args.backend,
        )
    finally:
        server.terminate()
        server.wait(timeout=30)
    figures["backend"] = args.backend
    print(json.dumps(figures, indent=2))
    return 0 if figures["ok"] == args.calls else 1


if __name__ == "__main__":
    sys.exit(main())
