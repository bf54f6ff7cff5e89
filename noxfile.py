"""Development sessions: ``nox -s tests lint typing``, ``nox -s bench``, ``nox -s demo``."""

import nox

nox.options.sessions = ["tests", "lint", "typing"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (asyncio and trio) against the emulator on loopback."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff, with its ASYNC rules, and the formatter's check."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typing(session: nox.Session) -> None:
    """mypy --strict over the package."""
    session.install("-e", ".[emulator]", "mypy")
    session.run("mypy", "--strict")


@nox.session
def bench(session: nox.Session) -> None:
    """Client CPU per call of the HTTP paths, against a fixed-reply server in another process."""
    session.install("-e", ".[bench]")
    session.run("python", "benchmarks/transports.py", *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    """The README's demo: serve the bundled examples, invoke helloWorld, stop."""
    session.install(".[emulator]")
    session.run("python", "-m", "baas_async", "demo")
