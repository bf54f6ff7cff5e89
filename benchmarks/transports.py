"""Client CPU time per call of several HTTP client paths, for one small JSON POST.

Every path sends the same cloud-function style request::

    POST /hserve/v1/cloud-function/job/
    {"function_name":"helloWorld","data":{"name":"allen"},"sync":true}

with ``--concurrency`` calls in flight, to a fixed-reply server
(``benchmarks/_server.py``) that runs in a separate process, so that the
``time.process_time()`` delta measured here is the client's CPU only.

    python benchmarks/transports.py                 # full run (a few minutes)
    python benchmarks/transports.py --quick         # smoke check (seconds)
    python benchmarks/transports.py --paths aiohttp-raw,httpx-default --json out.json

See ``benchmarks/README.md`` for what the columns mean.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import http.client
import importlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import httpx

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
SERVER_SCRIPT = HERE / "_server.py"

JOB_PATH = "/hserve/v1/cloud-function/job/"
BODY = json.dumps(
    {"function_name": "helloWorld", "data": {"name": "allen"}, "sync": True},
    separators=(",", ":"),
).encode()
HEADERS = {
    "X-Hydrogen-Client-ID": "demo",
    "Content-Type": "application/json",
    "Accept": "application/json",
}

Call = Callable[[], Awaitable[None]]


class BadStatus(Exception):
    """The server answered something other than 200."""


# ---------------------------------------------------------------------------
# Server process and its /stats counters
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerStats:
    connections: int
    open: int
    requests: int
    cpu: float


class StatsClient:
    """One persistent keep-alive connection to ``GET /stats``.

    Kept open for the whole run so that reading the counters does not itself
    add to the connection count between two readings.
    """

    def __init__(self, port: int) -> None:
        self._conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def read(self) -> ServerStats:
        self._conn.request("GET", "/stats")
        resp = self._conn.getresponse()
        data = json.loads(resp.read())
        return ServerStats(
            int(data["connections"]), int(data["open"]), int(data["requests"]), float(data["cpu"])
        )

    def close(self) -> None:
        self._conn.close()


def _wait_ready(proc: subprocess.Popen[bytes], ready: Path, timeout: float = 15.0) -> int:
    step = 0.02
    for _ in range(int(timeout / step)):
        if ready.exists():
            return int(ready.read_text().strip())
        if proc.poll() is not None:
            raise RuntimeError(f"benchmark server exited early with status {proc.returncode}")
        time.sleep(step)
    raise TimeoutError(f"benchmark server did not write {ready} within {timeout:.0f}s")


def _stop_server(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()  # SIGTERM to this PID only
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@contextlib.contextmanager
def fixed_reply_server() -> Iterator[int]:
    """Run ``_server.py`` in a child process; yield its port; always stop it."""
    with tempfile.TemporaryDirectory(prefix="baas-bench-") as tmp:
        ready = Path(tmp) / "port"
        cmd = [
            sys.executable,
            str(SERVER_SCRIPT),
            "--port",
            "0",
            "--ready-file",
            str(ready),
            "--parent-pid",
            str(os.getpid()),
        ]
        proc = subprocess.Popen(cmd)
        try:
            yield _wait_ready(proc, ready)
        finally:
            _stop_server(proc)


# ---------------------------------------------------------------------------
# Driving C concurrent workers and measuring one path
# ---------------------------------------------------------------------------


@dataclass
class RunResult:
    path: str
    repeat: int
    calls: int
    cpu_s: float
    wall_s: float
    conns_warmup: int
    conns_measured: int
    conns_open_at_end: int
    server_requests: int
    server_cpu_s: float
    errors: dict[str, int] = field(default_factory=dict)
    warmup_errors: dict[str, int] = field(default_factory=dict)
    error_samples: dict[str, str] = field(default_factory=dict)

    @property
    def cpu_us_per_call(self) -> float:
        return self.cpu_s / self.calls * 1e6

    @property
    def calls_per_s(self) -> float:
        return self.calls / self.wall_s


async def drive(
    call: Call, count: int, concurrency: int, errors: Counter[str], samples: dict[str, str]
) -> None:
    """Make exactly ``count`` calls with ``concurrency`` workers sharing a counter."""
    remaining = count

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            try:
                await call()
            except Exception as exc:
                key = str(exc) if isinstance(exc, BadStatus) else type(exc).__name__
                errors[key] += 1
                samples.setdefault(key, repr(exc)[:300])

    async with anyio.create_task_group() as tg:
        for _ in range(min(concurrency, count)):
            tg.start_soon(worker)


@dataclass(frozen=True)
class Settings:
    calls: int
    concurrency: int
    warmup: int
    warmup_seconds: float
    max_seconds: float


class Bench:
    """Handed to each path function; the path builds its client and calls ``run``."""

    def __init__(
        self, name: str, repeat: int, port: int, stats: StatsClient, settings: Settings
    ) -> None:
        self.name = name
        self.repeat = repeat
        self.base_url = f"http://127.0.0.1:{port}"
        self.url = self.base_url + JOB_PATH
        self.concurrency = settings.concurrency
        self._settings = settings
        self._stats = stats
        self._before = stats.read()
        self.result: RunResult | None = None

    async def _timed(
        self, call: Call, count: int, errors: Counter[str], samples: dict[str, str]
    ) -> float:
        """Calls per wall second of ``count`` calls (0 when ``count`` is 0)."""
        if count <= 0:
            return 0.0
        wall0 = time.perf_counter()
        await drive(call, count, self.concurrency, errors, samples)
        return count / max(time.perf_counter() - wall0, 1e-9)

    async def run(self, call: Call) -> None:
        """Warm up, then measure.

        The warmup is ``--warmup`` calls (which open the connections), topped up
        with enough calls to last ``--warmup-seconds`` in all, so that pools
        that drop idle connections after a keep-alive expiry (5 s in httpx)
        have settled before the measurement starts.  The measured calls are
        ``--calls``, cut down (never below 1,000) so that they take about
        ``--max-seconds`` at the rate seen in the warmup.  Every phase is a
        fixed number of calls, fixed before it starts.
        """
        cfg = self._settings
        warmup_errors: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        samples: dict[str, str] = {}
        wall0 = time.perf_counter()
        rate = await self._timed(call, cfg.warmup, warmup_errors, samples)
        left = cfg.warmup_seconds - (time.perf_counter() - wall0)
        if rate > 0 and left > 0:
            rate = await self._timed(call, int(rate * left), warmup_errors, samples) or rate
        calls = cfg.calls
        if cfg.max_seconds > 0 and rate > 0:
            calls = min(cfg.calls, max(int(rate * cfg.max_seconds), 1_000))
        warm = self._stats.read()
        gc.collect()
        cpu0 = time.process_time()
        wall0 = time.perf_counter()
        await drive(call, calls, self.concurrency, errors, samples)
        wall1 = time.perf_counter()
        cpu1 = time.process_time()
        done = self._stats.read()
        self.result = RunResult(
            path=self.name,
            repeat=self.repeat,
            calls=calls,
            cpu_s=cpu1 - cpu0,
            wall_s=wall1 - wall0,
            conns_warmup=warm.connections - self._before.connections,
            conns_measured=done.connections - warm.connections,
            conns_open_at_end=done.open - 1,  # minus the /stats connection
            server_requests=done.requests - warm.requests,
            server_cpu_s=done.cpu - warm.cpu,
            errors=dict(errors),
            warmup_errors=dict(warmup_errors),
            error_samples=samples,
        )


# ---------------------------------------------------------------------------
# The paths
# ---------------------------------------------------------------------------


def _limits(concurrency: int) -> httpx.Limits:
    return httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)


def _check_httpx(resp: httpx.Response) -> None:
    if resp.status_code != 200:
        raise BadStatus(f"HTTP {resp.status_code}")


async def path_httpx_default(bench: Bench) -> None:
    async with httpx.AsyncClient(limits=_limits(bench.concurrency)) as client:
        url = bench.url

        async def call() -> None:
            resp = await client.post(url, content=BODY, headers=HEADERS)
            _check_httpx(resp)

        await bench.run(call)


async def path_httpx_aiohttp(bench: Bench) -> None:
    from httpx_aiohttp import AiohttpTransport

    transport = AiohttpTransport(limits=_limits(bench.concurrency))
    async with httpx.AsyncClient(transport=transport) as client:
        url = bench.url

        async def call() -> None:
            resp = await client.post(url, content=BODY, headers=HEADERS)
            _check_httpx(resp)

        await bench.run(call)


async def path_aiohttp_raw(bench: Bench) -> None:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=bench.concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        url = bench.url

        async def call() -> None:
            async with session.post(url, data=BODY, headers=HEADERS) as resp:
                await resp.read()
                if resp.status != 200:
                    raise BadStatus(f"HTTP {resp.status}")

        await bench.run(call)


async def path_httpx_transport_direct(bench: Bench) -> None:
    async with httpx.AsyncHTTPTransport(limits=_limits(bench.concurrency)) as transport:
        url = bench.url

        async def call() -> None:
            request = httpx.Request("POST", url, content=BODY, headers=HEADERS)
            resp = await transport.handle_async_request(request)
            try:
                await resp.aread()
            finally:
                await resp.aclose()
            _check_httpx(resp)

        await bench.run(call)


def _import_baas() -> Any:
    """``baas_async.AsyncBaaS``, from the installed package or else this checkout."""
    try:
        module = importlib.import_module("baas_async")
    except ImportError:
        if str(REPO_ROOT) not in sys.path:
            sys.path.append(str(REPO_ROOT))
        module = importlib.import_module("baas_async")
    return module.AsyncBaaS


async def path_baas_async(bench: Bench) -> None:
    """Plug-in slot for the package's own client (default timeouts and limits)."""
    async_baas = _import_baas()
    async with async_baas("demo", base_url=bench.base_url) as baas:

        async def call() -> None:
            await baas.invoke("helloWorld", {"name": "allen"})

        await bench.run(call)


def _baas_unavailable() -> str | None:
    try:
        async_baas = _import_baas()
    except Exception as exc:
        return f"skipped (baas_async not importable yet: {type(exc).__name__}: {exc})"
    if not hasattr(async_baas, "invoke"):
        return "skipped (baas_async not importable yet: AsyncBaaS has no invoke)"
    return None


def _module_unavailable(name: str) -> str | None:
    try:
        importlib.import_module(name)
    except Exception as exc:
        return f"skipped ({name} cannot be imported: {type(exc).__name__}: {exc})"
    return None


@dataclass(frozen=True)
class HttpPath:
    name: str
    func: Callable[[Bench], Awaitable[None]]
    backend: str
    unavailable: Callable[[], str | None] = lambda: None


HTTP_PATHS = [
    HttpPath("httpx-default", path_httpx_default, "asyncio"),
    HttpPath(
        "httpx+httpx-aiohttp",
        path_httpx_aiohttp,
        "asyncio",
        lambda: _module_unavailable("httpx_aiohttp"),
    ),
    HttpPath("aiohttp-raw", path_aiohttp_raw, "asyncio", lambda: _module_unavailable("aiohttp")),
    HttpPath("httpx-transport-direct", path_httpx_transport_direct, "asyncio"),
    HttpPath(
        "httpx-default-trio", path_httpx_default, "trio", lambda: _module_unavailable("trio")
    ),
    HttpPath("baas_async", path_baas_async, "asyncio", _baas_unavailable),
    HttpPath(
        "baas_async-trio",
        path_baas_async,
        "trio",
        lambda: _module_unavailable("trio") or _baas_unavailable(),
    ),
]


# ---------------------------------------------------------------------------
# Timeout-scope overhead (no I/O)
# ---------------------------------------------------------------------------


async def _in_task(body: Callable[[int], Awaitable[float]], iterations: int) -> float:
    """Run ``body`` inside a task-group task (as a real call would be)."""
    out: list[float] = []

    async def task() -> None:
        out.append(await body(iterations))

    async with anyio.create_task_group() as tg:
        tg.start_soon(task)
    return out[0]


# The scopes are timed in batches, with a checkpoint (untimed) between batches:
# an event loop that never runs would pile up every cancelled deadline timer
# (asyncio keeps them in its heap until the loop next runs), which no real
# program does and which inflates the figures.
_BATCH = 100


def _batches(iterations: int) -> int:
    return max(1, iterations // _BATCH)


async def _loop_baseline(iterations: int) -> float:
    cpu = 0.0
    for _ in range(_batches(iterations)):
        cpu0 = time.process_time()
        for _ in range(_BATCH):
            pass
        cpu += time.process_time() - cpu0
        await anyio.lowlevel.checkpoint()
    return cpu / (_batches(iterations) * _BATCH) * 1e6


async def _anyio_fail_after(iterations: int) -> float:
    cpu = 0.0
    for _ in range(_batches(iterations)):
        cpu0 = time.process_time()
        for _ in range(_BATCH):
            with anyio.fail_after(5):  # noqa: ASYNC100 -- timing the scope itself, no I/O
                pass
        cpu += time.process_time() - cpu0
        await anyio.lowlevel.checkpoint()
    return cpu / (_batches(iterations) * _BATCH) * 1e6


async def _asyncio_timeout(iterations: int) -> float:
    import asyncio

    cpu = 0.0
    for _ in range(_batches(iterations)):
        cpu0 = time.process_time()
        for _ in range(_BATCH):
            async with asyncio.timeout(5):  # noqa: ASYNC100 -- timing the scope itself
                pass
        cpu += time.process_time() - cpu0
        await anyio.lowlevel.checkpoint()
    return cpu / (_batches(iterations) * _BATCH) * 1e6


async def _trio_fail_after(iterations: int) -> float:
    import trio

    cpu = 0.0
    for _ in range(_batches(iterations)):
        cpu0 = time.process_time()
        for _ in range(_BATCH):
            with trio.fail_after(5):  # noqa: ASYNC100 -- timing the scope itself
                pass
        cpu += time.process_time() - cpu0
        await anyio.lowlevel.checkpoint()
    return cpu / (_batches(iterations) * _BATCH) * 1e6


def _no_asyncio_timeout() -> str | None:
    if sys.version_info < (3, 11):
        return "skipped (asyncio.timeout needs Python 3.11+)"
    return None


@dataclass(frozen=True)
class OverheadPath:
    name: str
    body: Callable[[int], Awaitable[float]]
    backend: str
    unavailable: Callable[[], str | None] = lambda: None


OVERHEAD_PATHS = [
    OverheadPath("empty-loop-asyncio", _loop_baseline, "asyncio"),
    OverheadPath("anyio.fail_after-asyncio", _anyio_fail_after, "asyncio"),
    OverheadPath("asyncio.timeout", _asyncio_timeout, "asyncio", _no_asyncio_timeout),
    OverheadPath(
        "anyio.fail_after-trio",
        _anyio_fail_after,
        "trio",
        lambda: _module_unavailable("trio"),
    ),
    OverheadPath("trio.fail_after", _trio_fail_after, "trio", lambda: _module_unavailable("trio")),
]

ALL_NAMES = [p.name for p in HTTP_PATHS] + [p.name for p in OVERHEAD_PATHS]


# ---------------------------------------------------------------------------
# Running, summarising, printing
# ---------------------------------------------------------------------------


@dataclass
class Summary:
    path: str
    backend: str
    note: str = ""
    runs: list[dict[str, Any]] = field(default_factory=list)
    cpu_us_per_call: float | None = None
    cpu_us_min: float | None = None
    cpu_us_max: float | None = None
    calls_per_s: float | None = None
    conns_warmup: int | None = None
    conns_measured: int | None = None
    conns_open_at_end: int | None = None
    calls: int | None = None
    client_cpu_pct: float | None = None
    server_cpu_pct: float | None = None
    errors: dict[str, int] = field(default_factory=dict)
    warmup_errors: dict[str, int] = field(default_factory=dict)


def run_http_path(
    path: HttpPath, repeat: int, port: int, stats: StatsClient, args: argparse.Namespace
) -> RunResult:
    settings = Settings(
        calls=args.calls,
        concurrency=args.concurrency,
        warmup=args.warmup,
        warmup_seconds=args.warmup_seconds,
        max_seconds=args.max_seconds,
    )
    bench = Bench(path.name, repeat, port, stats, settings)
    gc.collect()
    # A fresh event loop (asyncio or trio) per run.
    anyio.run(path.func, bench, backend=path.backend)
    if bench.result is None:
        raise RuntimeError(f"path {path.name} never called Bench.run()")
    return bench.result


def summarise_http(path: HttpPath, runs: list[RunResult]) -> Summary:
    summary = Summary(path.name, path.backend, runs=[asdict(r) for r in runs])
    cpu = [r.cpu_us_per_call for r in runs]
    summary.cpu_us_per_call = statistics.median(cpu)
    summary.cpu_us_min, summary.cpu_us_max = min(cpu), max(cpu)
    summary.calls_per_s = statistics.median(r.calls_per_s for r in runs)
    # Connection counts: the worst run, so that any churn shows up.
    summary.conns_warmup = max(r.conns_warmup for r in runs)
    summary.conns_measured = max(r.conns_measured for r in runs)
    # Connections the client still held when the measurement ended (fewest seen).
    summary.conns_open_at_end = min(r.conns_open_at_end for r in runs)
    summary.calls = int(statistics.median(r.calls for r in runs))
    summary.client_cpu_pct = statistics.median(100 * r.cpu_s / r.wall_s for r in runs)
    summary.server_cpu_pct = statistics.median(100 * r.server_cpu_s / r.wall_s for r in runs)
    errors: Counter[str] = Counter()
    warmup_errors: Counter[str] = Counter()
    for r in runs:
        errors.update(r.errors)
        warmup_errors.update(r.warmup_errors)
    summary.errors = dict(errors)
    summary.warmup_errors = dict(warmup_errors)
    notes = []
    for r in runs:
        failed = sum(r.errors.values())
        if r.server_requests != r.calls - failed:
            notes.append(
                f"run {r.repeat}: server saw {r.server_requests} requests "
                f"for {r.calls - failed} successful calls"
            )
    summary.note = "; ".join(notes)
    return summary


def run_overhead(path: OverheadPath, iterations: int) -> float:
    gc.collect()
    return float(anyio.run(_in_task, path.body, iterations, backend=path.backend))


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    right = [0 < i < len(headers) - 1 for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        parts = [
            c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True)
        ]
        return "| " + " | ".join(parts) + " |"

    sep = (
        "".join(
            "|" + ("-" * (w + 1) + ":" if r else "-" * (w + 2))
            for w, r in zip(widths, right, strict=True)
        )
        + "|"
    )
    return "\n".join([line(headers), sep, *(line(r) for r in rows)])


def format_http_table(summaries: list[Summary]) -> str:
    headers = [
        "path",
        "µs CPU/call",
        "min–max",
        "calls/s",
        "calls",
        "client CPU %",
        "server CPU %",
        "conns warmup",
        "conns measured",
        "conns open",
        "errors / note",
    ]
    rows = []
    for s in summaries:
        if s.cpu_us_per_call is None:
            rows.append([s.path, *(["-"] * (len(headers) - 2)), s.note])
            continue
        errors = ", ".join(f"{k}×{v}" for k, v in sorted(s.errors.items())) or "0"
        if s.warmup_errors:
            errors += f" (+{sum(s.warmup_errors.values())} in warmup)"
        rows.append(
            [
                s.path,
                _fmt(s.cpu_us_per_call, ".1f"),
                f"{_fmt(s.cpu_us_min, '.1f')}–{_fmt(s.cpu_us_max, '.1f')}",
                _fmt(s.calls_per_s, ",.0f"),
                f"{s.calls:,}",
                _fmt(s.client_cpu_pct, ".0f"),
                _fmt(s.server_cpu_pct, ".0f"),
                str(s.conns_warmup),
                str(s.conns_measured),
                str(s.conns_open_at_end),
                errors,
            ]
        )
    return _table(headers, rows)


def format_overhead_table(summaries: list[Summary]) -> str:
    rows = []
    for s in summaries:
        if s.cpu_us_per_call is None:
            rows.append([s.path, "-", "-", s.note])
        else:
            spread = f"{_fmt(s.cpu_us_min, '.3f')}–{_fmt(s.cpu_us_max, '.3f')}"
            rows.append([s.path, _fmt(s.cpu_us_per_call, ".3f"), spread, ""])
    return _table(["timeout scope (no I/O)", "µs CPU/iteration", "min–max", "note"], rows)


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("httpx", "httpcore", "aiohttp", "httpx-aiohttp", "anyio", "trio", "baas_async"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Client CPU time per call of HTTP client paths (small JSON POST).",
    )
    parser.add_argument("--calls", type=int, default=20_000, help="measured calls per run")
    parser.add_argument("--concurrency", type=int, default=64, help="calls in flight")
    parser.add_argument("--repeat", type=int, default=3, help="runs per path (median shown)")
    parser.add_argument(
        "--warmup",
        type=int,
        help="unmeasured calls before each run (default: max(4 x concurrency, calls / 40))",
    )
    parser.add_argument(
        "--warmup-seconds",
        type=float,
        default=6.0,
        help="top the warmup up to about this long (longer than httpx's 5 s keep-alive expiry)",
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=5.0,
        help="cut --calls so one measured run takes about this long (0: no cut)",
    )
    parser.add_argument(
        "--overhead-iterations",
        type=int,
        default=100_000,
        help="iterations of the timeout-scope micro-measurement",
    )
    parser.add_argument("--paths", help="comma-separated subset of: " + ", ".join(ALL_NAMES))
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument(
        "--quick", action="store_true", help="tiny smoke run: 2,000 calls, 1 repeat"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.calls, args.repeat, args.overhead_iterations = 2_000, 1, 20_000
        args.warmup_seconds = 0.0
        if args.max_seconds > 0:
            args.max_seconds = min(args.max_seconds, 2.0)
    if args.warmup is None:
        args.warmup = max(4 * args.concurrency, args.calls // 40)
    if args.calls < 1 or args.concurrency < 1 or args.repeat < 1 or args.warmup < 0:
        parser.error("--calls, --concurrency and --repeat must be >= 1, --warmup >= 0")
    if args.paths:
        wanted = [p.strip() for p in args.paths.split(",") if p.strip()]
        unknown = sorted(set(wanted) - set(ALL_NAMES))
        if unknown:
            parser.error(f"unknown path(s) {unknown}; choose from {ALL_NAMES}")
        args.selected = set(wanted)
    else:
        args.selected = set(ALL_NAMES)
    return args


def _on_sigterm(signum: int, frame: object) -> None:
    # Treat SIGTERM like Ctrl-C (whose handler asyncio and trio replace while
    # they run, to stop cleanly), so the finally blocks stop the server.
    signal.raise_signal(signal.SIGINT)


def _is_interrupt(exc: BaseException) -> bool:
    """KeyboardInterrupt, possibly inside (nested) exception groups."""
    if isinstance(exc, KeyboardInterrupt):
        return True
    inner = getattr(exc, "exceptions", None)
    return bool(inner) and all(_is_interrupt(e) for e in inner)


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except BaseException as exc:
        if not _is_interrupt(exc):
            raise
        print("interrupted", file=sys.stderr)
        return 130


def _main(argv: list[str] | None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    from _server import raise_fd_limit

    raise_fd_limit()

    http_paths = [p for p in HTTP_PATHS if p.name in args.selected]
    overhead_paths = [p for p in OVERHEAD_PATHS if p.name in args.selected]
    started = dt.datetime.now(dt.timezone.utc)

    print(
        f"up to {args.calls:,} calls (about {args.max_seconds:g}s) x {args.repeat} repeat(s), "
        f"concurrency {args.concurrency}, warmup {args.warmup:,} calls "
        f"(at least {args.warmup_seconds:g}s); "
        f"python {platform.python_version()}, {os.cpu_count()} CPU(s)",
        flush=True,
    )

    http_summaries: list[Summary] = []
    if http_paths:
        skipped = {p.name: p.unavailable() for p in http_paths}
        runnable = [p for p in http_paths if skipped[p.name] is None]
        runs: dict[str, list[RunResult]] = {p.name: [] for p in runnable}
        failures: dict[str, str] = {}
        with fixed_reply_server() as port:
            stats = StatsClient(port)
            try:
                for rep in range(args.repeat):
                    for path in runnable:
                        if path.name in failures:
                            continue
                        try:
                            result = run_http_path(path, rep, port, stats, args)
                        except Exception as exc:
                            failures[path.name] = f"failed: {type(exc).__name__}: {exc}"
                            print(f"  {path.name}: {failures[path.name]}", flush=True)
                            continue
                        runs[path.name].append(result)
                        print(
                            f"  [{rep + 1}/{args.repeat}] {path.name:<24} "
                            f"{result.cpu_us_per_call:7.1f} µs CPU/call "
                            f"{result.calls_per_s:9,.0f} calls/s ({result.calls:,} calls) "
                            f"conns {result.conns_warmup}+{result.conns_measured}, "
                            f"{result.conns_open_at_end} open"
                            + (f" errors {result.errors}" if result.errors else ""),
                            flush=True,
                        )
            finally:
                stats.close()
        for path in http_paths:
            if skipped[path.name] is not None:
                summary = Summary(path.name, path.backend, note=str(skipped[path.name]))
            elif not runs[path.name]:
                summary = Summary(path.name, path.backend, note=failures.get(path.name, "no runs"))
            else:
                summary = summarise_http(path, runs[path.name])
                if path.name in failures:
                    summary.note = "; ".join(filter(None, [summary.note, failures[path.name]]))
            http_summaries.append(summary)

    overhead_summaries: list[Summary] = []
    if overhead_paths:
        samples: dict[str, list[float]] = {p.name: [] for p in overhead_paths}
        notes = {p.name: p.unavailable() for p in overhead_paths}
        for _rep in range(args.repeat):
            for opath in overhead_paths:
                if notes[opath.name] is None:
                    samples[opath.name].append(run_overhead(opath, args.overhead_iterations))
        for opath in overhead_paths:
            summary = Summary(opath.name, opath.backend, note=notes[opath.name] or "")
            values = samples[opath.name]
            if values:
                summary.runs = [{"us_per_iteration": v} for v in values]
                summary.cpu_us_per_call = statistics.median(values)
                summary.cpu_us_min, summary.cpu_us_max = min(values), max(values)
            overhead_summaries.append(summary)

    print()
    if http_summaries:
        print(format_http_table(http_summaries))
        for s in http_summaries:
            if s.note and s.cpu_us_per_call is not None:
                print(f"note: {s.path}: {s.note}")
        print()
    if overhead_summaries:
        print(format_overhead_table(overhead_summaries))
        print()

    if args.json:
        report = {
            "date": started.isoformat(timespec="seconds"),
            "machine": {
                "platform": platform.platform(),
                "cpu_count": os.cpu_count(),
                "versions": _versions(),
            },
            "settings": {
                "calls": args.calls,
                "warmup": args.warmup,
                "concurrency": args.concurrency,
                "repeat": args.repeat,
                "warmup_seconds": args.warmup_seconds,
                "max_seconds": args.max_seconds,
                "overhead_iterations": args.overhead_iterations,
                "request": {"path": JOB_PATH, "headers": HEADERS, "body": BODY.decode()},
            },
            "http": [asdict(s) for s in http_summaries],
            "timeout_overhead": [asdict(s) for s in overhead_summaries],
        }
        args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        print(f"wrote {args.json}")
    failed = [s.path for s in http_summaries if "failed:" in s.note]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
