"""The baas-async command line: demo, invoke and serve."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable

import httpx
import pytest

from baas_async._cli import main

from ._servers import free_port
from .conftest import FUNCTIONS, SECRET, ServedEmulator


def test_demo_prints_hello_allen() -> None:
    """`python -m baas_async demo` serves the examples, invokes helloWorld and stops."""
    done = subprocess.run(
        [sys.executable, "-m", "baas_async", "demo"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert 'client API: invoke(\'helloWorld\', {"name": "allen"}) -> hello allen' in done.stdout
    assert "open API:" in done.stdout
    assert "emulator: stopped" in done.stdout


def test_invoke_prints_the_result_as_json(
    emulator: ServedEmulator, capsys: pytest.CaptureFixture[str]
) -> None:
    """invoke NAME JSON prints the decoded result and exits 0."""
    flags = ["--base-url", emulator.url, "--client-id", "demo"]
    status = main(["invoke", "echo", '{"a": 1}', *flags])
    printed = json.loads(capsys.readouterr().out)
    assert status == 0
    assert printed["code"] == 0
    assert printed["data"]["data"] == {"a": 1}
    assert printed["error"] == {}


def test_invoke_takes_credentials_from_the_environment(
    emulator: ServedEmulator, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """BAAS_CLIENT_ID, BAAS_CLIENT_SECRET and BAAS_BASE_URL select the open API."""
    monkeypatch.setenv("BAAS_CLIENT_ID", "demo")
    monkeypatch.setenv("BAAS_CLIENT_SECRET", SECRET)
    monkeypatch.setenv("BAAS_BASE_URL", emulator.url)
    assert main(["invoke", "echo", "--env", "t1"]) == 0
    event = json.loads(capsys.readouterr().out)["data"]
    assert event["eventType"] == "open_api"
    assert event["env"]["id"] == "t1"


def test_invoke_async_prints_accepted(
    emulator: ServedEmulator, capsys: pytest.CaptureFixture[str]
) -> None:
    """--async queues the job and prints the accepted status."""
    flags = ["--base-url", emulator.url, "--client-id", "demo"]
    assert main(["invoke", "echo", "--async", *flags]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "ok"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["invoke", "fail", '{"message": "boom"}'], "error: cloud function 'fail' failed: boom"),
        (["invoke", "nope"], "error: FunctionNotFound: cloud function 'nope': HTTP 404"),
        (["invoke", "echo", "{bad json"], "error: PARAMS is not valid JSON"),
        (["invoke", "echo", "--timeout", "0"], "error: timeout must be a positive"),
    ],
)
def test_failures_exit_non_zero_with_one_line(
    emulator: ServedEmulator, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    """A failed call, a platform error or bad input: exit 1 and one line on stderr."""
    status = main([*argv, "--base-url", emulator.url, "--client-id", "demo"])
    err = capsys.readouterr().err
    assert status == 1
    assert err.startswith(message)
    assert err.count("\n") == 1


def test_invoke_without_client_id_says_so(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No client id anywhere: exit 1, naming the flag and the variable."""
    monkeypatch.delenv("BAAS_CLIENT_ID", raising=False)
    assert main(["invoke", "echo"]) == 1
    assert "BAAS_CLIENT_ID" in capsys.readouterr().err


def test_serve_answers_over_http_until_stopped() -> None:
    """`baas-async serve DIR --port N` serves the functions on 127.0.0.1:N."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "baas_async", "serve", str(FUNCTIONS), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        assert f"http://127.0.0.1:{port}" in banner
        reply = httpx.post(
            f"http://127.0.0.1:{port}/hserve/v1/cloud-function/job/",
            headers={"X-Hydrogen-Client-ID": "demo"},
            json={"function_name": "echo", "data": 5},
        )
        assert reply.json()["data"]["data"] == 5
    finally:
        process.terminate()
        process.communicate(timeout=10)


def test_serve_refuses_a_missing_directory(capsys: pytest.CaptureFixture[str]) -> None:
    """serve with a DIR that does not exist exits 1 at once."""
    assert main(["serve", "/nonexistent/functions"]) == 1
    assert "DIR is not a directory" in capsys.readouterr().err


def test_emulator_fixture_is_shared(serve_emulator: Callable[..., ServedEmulator]) -> None:
    """Two emulators can run side by side on their own ports."""
    first, second = serve_emulator(), serve_emulator()
    assert first.url != second.url
