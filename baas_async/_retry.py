"""When a failed call is tried again: the retry policy, its budget and the testing switch.

The policy is outcome-based: what matters is whether the function can have run, not which
exception class came up. By default a call is retried only when the platform provably did
not run the function:

* the connection could not be opened, or broke before anything was sent (``ConnectError``);
* HTTP 429 and 503, honouring ``Retry-After``;
* HTTP 400 for a job that could not be scheduled (the quota stayed full).

With ``idempotent=True`` (per call, or per function in the policy) a call is also replayed
when it may have run: a connection lost after sending, a garbled reply, HTTP 500/502/504,
and a function the platform stopped for overrunning its time limit. A reply from the
function itself (``code != 0``) is never replayed: the function ran and answered.

Every attempt and every pause lies inside the call's one deadline.
"""

from __future__ import annotations

import random
from typing import Final

from attrs import field, frozen, validators

from ._exceptions import (
    BaaSError,
    ConnectError,
    ConnectionLost,
    HTTPStatusError,
    InvalidResponse,
    InvocationRejected,
    RateLimited,
    ServerError,
)
from ._models import AcceptedJob, InvokeResult

__all__ = ["RetryBudget", "RetryPolicy", "backoff", "is_testing", "retry_reason", "set_testing"]

_testing = False


def set_testing(testing: bool) -> None:
    """Switch test mode on or off: in test mode retries do not pause at all (neither the
    backoff nor ``Retry-After``), so tests of retrying code run at full speed.

    Like stamina's ``set_testing``. A ``Retry-After`` longer than the call's deadline still
    fails the call at once, as it would outside test mode.
    """
    global _testing
    _testing = bool(testing)


def is_testing() -> bool:
    """Whether :func:`set_testing` switched test mode on."""
    return _testing


def _positive(instance: object, attribute: object, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        name = getattr(attribute, "name", "value")
        raise ValueError(f"{name} must be a positive number, got {value!r}")


@frozen(kw_only=True)
class RetryPolicy:
    """How a call is retried; give one to ``AsyncBaaS(retry=...)`` or to ``invoke(retry=...)``.

    ``attempts`` counts the first try (3: up to two retries; 1: never retry).
    Pauses follow exponential backoff with full jitter: before retry *n* the call sleeps a
    random time between 0 and ``min(max_backoff, initial_backoff * 2 ** (n - 1))`` seconds,
    or as long as ``Retry-After`` asks if that is longer. ``idempotent`` replays calls that
    may have run (see the module docstring); ``idempotent_functions`` does the same for the
    named functions only.

    >>> RetryPolicy(attempts=5, idempotent_functions=frozenset({"resizeImage"}))
    RetryPolicy(attempts=5, initial_backoff=0.1, max_backoff=2.0, idempotent=False, idempotent_functions=frozenset({'resizeImage'}))
    """  # noqa: E501

    attempts: int = field(default=3, validator=[validators.instance_of(int), validators.ge(1)])
    initial_backoff: float = field(default=0.1, validator=_positive)
    max_backoff: float = field(default=2.0, validator=_positive)
    idempotent: bool = field(default=False, validator=validators.instance_of(bool))
    idempotent_functions: frozenset[str] = field(default=frozenset(), converter=frozenset)

    def is_idempotent(self, function_name: str) -> bool:
        """Whether calls of ``function_name`` may be replayed after they may have run."""
        return self.idempotent or function_name in self.idempotent_functions


#: Never retry.
NO_RETRY: Final = RetryPolicy(attempts=1)


class RetryBudget:
    """A client-wide token bucket that caps retries, so that an outage does not multiply the
    load on the platform (botocore's "standard" retry mode works the same way).

    Each retry takes ``retry_cost`` tokens and is refused when the bucket has fewer; each
    call that succeeds at once puts ``success_refund`` back, up to ``capacity``. With the
    defaults a client that only fails can retry 100 times before it stops retrying, and
    refills as calls succeed again.
    """

    def __init__(
        self, capacity: int = 500, *, retry_cost: int = 5, success_refund: int = 1
    ) -> None:
        for name, value in (
            ("capacity", capacity),
            ("retry_cost", retry_cost),
            ("success_refund", success_refund),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative int, got {value!r}")
        self.capacity = capacity
        self.retry_cost = retry_cost
        self.success_refund = success_refund
        self.tokens = capacity

    def __repr__(self) -> str:
        return f"<RetryBudget {self.tokens}/{self.capacity} tokens>"

    def try_spend(self) -> bool:
        """Take the tokens for one retry; ``False`` when the budget is exhausted."""
        if self.tokens < self.retry_cost:
            return False
        self.tokens -= self.retry_cost
        return True

    def refund(self) -> None:
        """Credit a call that succeeded."""
        self.tokens = min(self.capacity, self.tokens + self.success_refund)


def retry_reason(outcome: BaaSError | InvokeResult | AcceptedJob, idempotent: bool) -> bool:
    """Whether this outcome of one attempt may be retried (the policy's core, pure)."""
    if isinstance(outcome, (InvokeResult, AcceptedJob)):
        return idempotent and isinstance(outcome, InvokeResult) and outcome.timed_out
    if isinstance(outcome, (ConnectError, RateLimited)):
        return True
    if isinstance(outcome, (ConnectionLost, InvocationRejected)):
        return idempotent or not outcome.may_have_run
    if isinstance(outcome, ServerError):
        return outcome.status == 503 or (idempotent and outcome.status in (500, 502, 504))
    if isinstance(outcome, InvalidResponse):
        return idempotent
    return False


def backoff(policy: RetryPolicy, retry: int, outcome: object) -> float:
    """Seconds to pause before retry number ``retry`` (1 for the first retry)."""
    cap = min(policy.max_backoff, policy.initial_backoff * 2 ** (retry - 1))
    delay = random.uniform(0, cap)  # noqa: S311 - jitter, not cryptography
    if isinstance(outcome, HTTPStatusError) and outcome.retry_after is not None:
        delay = max(delay, outcome.retry_after)
    return delay
