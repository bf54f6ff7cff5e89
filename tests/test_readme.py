"""The README's examples run verbatim against the emulator on 127.0.0.1:8000."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from anyio.from_thread import BlockingPortal

from baas_async.emulator import Emulator

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL)
SH_BLOCKS = re.findall(r"```sh\n(.*?)```", README, flags=re.DOTALL)


@pytest.fixture(scope="module")
def port_8000(portal: BlockingPortal) -> Iterator[str]:
    """The examples' emulator, as `baas-async serve examples/functions --port 8000` runs it."""
    emulator = Emulator(ROOT / "examples" / "functions")
    ready = portal.call(anyio.Event)
    future = portal.start_task_soon(
        lambda: emulator.serve(port=8000, started=lambda port: ready.set())
    )

    async def wait_ready() -> bool:
        with anyio.move_on_after(10):
            await ready.wait()
        return ready.is_set()

    if not portal.call(wait_ready):
        why = future.exception() if future.done() else "not listening after 10 s"
        pytest.fail(f"could not serve the emulator on port 8000: {why}")
    yield "http://127.0.0.1:8000"
    future.cancel()


def test_readme_has_python_examples() -> None:
    """The README shows runnable Python, and the Quickstart's two commands."""
    assert len(PYTHON_BLOCKS) >= 4
    quickstart = [block.strip() for block in SH_BLOCKS[:2]]
    assert quickstart == [
        'python -m pip install ".[emulator]" && python -m baas_async demo',
        'python -m pip install -e ".[test]" && python -m pytest',
    ]


@pytest.mark.parametrize(
    "index", range(len(PYTHON_BLOCKS)), ids=[f"block{i}" for i in range(len(PYTHON_BLOCKS))]
)
def test_python_example_runs(port_8000: str, index: int) -> None:
    """Each Python example runs as written and prints what its comments promise."""
    block = PYTHON_BLOCKS[index]
    done = subprocess.run(
        [sys.executable, "-c", block],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for promised in re.findall(r"# (.+)$", block, flags=re.MULTILINE):
        if promised.startswith(("hello", "True")):
            assert promised in done.stdout


def test_cli_invoke_example_runs(port_8000: str) -> None:
    """The README's `baas-async invoke` line prints hello allen."""
    (line,) = [line for block in SH_BLOCKS for line in block.splitlines() if " invoke " in line]
    argv = shlex.split(line)
    assert argv[0] == "baas-async"
    done = subprocess.run(
        [sys.executable, "-m", "baas_async", *argv[1:]],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert '"data": "hello allen"' in done.stdout
