"""Defaults, and the sentinel that tells "not given" apart from ``None`` ("disabled")."""

from __future__ import annotations

import enum
from typing import Final, Literal

import httpx

__all__ = [
    "DEFAULT_ASYNC_TIMEOUT",
    "DEFAULT_LIMITS",
    "DEFAULT_MAX_RESPONSE_SIZE",
    "DEFAULT_SYNC_TIMEOUT",
    "HSERVE_BASE_URL",
    "OSERVE_BASE_URL",
    "USE_CLIENT_DEFAULT",
    "UseClientDefault",
]


class UseClientDefault(enum.Enum):
    """Type of :data:`USE_CLIENT_DEFAULT`."""

    USE_CLIENT_DEFAULT = enum.auto()

    def __repr__(self) -> str:
        return "USE_CLIENT_DEFAULT"


#: Pass (or leave) ``timeout=USE_CLIENT_DEFAULT`` to use the client's deadline for the mode;
#: ``timeout=None`` disables the deadline.
USE_CLIENT_DEFAULT: Final[Literal[UseClientDefault.USE_CLIENT_DEFAULT]] = (
    UseClientDefault.USE_CLIENT_DEFAULT
)

#: The platform gives a synchronous function 5 s, so waiting longer learns nothing more.
DEFAULT_SYNC_TIMEOUT: Final = 5.0
#: Accepting an asynchronous job is quick, but the platform's scheduler may retry for up to
#: the job's 300 s when the app's concurrency quota is full.
DEFAULT_ASYNC_TIMEOUT: Final = 300.0
#: 100 connections: the platform runs at most 100 jobs of an app at once (128 MB plan), so
#: more sockets would only queue at the platform instead of in the pool. Pool waits are
#: bounded by the call's deadline, not by a separate pool timeout.
DEFAULT_LIMITS: Final = httpx.Limits(
    max_connections=100, max_keepalive_connections=100, keepalive_expiry=15.0
)

#: Replies are small JSON documents; 4 MiB leaves room for large function results while a
#: runaway or hostile reply cannot exhaust memory.
DEFAULT_MAX_RESPONSE_SIZE: Final = 4 * 1024 * 1024

#: The JavaScript SDK's default host for the client API; apps usually have their own domain.
HSERVE_BASE_URL: Final = "https://api.myminapp.com"
#: The open API's host.
OSERVE_BASE_URL: Final = "https://cloud.minapp.com"
