"""The public surface: exported names, docstrings, construction checks, secrets kept out."""

from __future__ import annotations

import inspect

import httpx
import pytest

import baas_async
import baas_async.emulator
from baas_async import AsyncBaaS, BaaSError

PUBLIC = {
    "USE_CLIENT_DEFAULT",
    "AcceptedJob",
    "AsyncBaaS",
    "BaaSError",
    "ClientClosed",
    "ConnectError",
    "ConnectionLost",
    "Forbidden",
    "FunctionError",
    "FunctionErrorInfo",
    "FunctionNotFound",
    "HTTPStatusError",
    "InvalidResponse",
    "InvocationRejected",
    "InvocationTimeout",
    "InvokeResult",
    "ItemResult",
    "PaymentRequired",
    "RateLimited",
    "ResponseTooLarge",
    "RetryBudget",
    "RetryPolicy",
    "ServerError",
    "TransportError",
    "Unauthorized",
    "UseClientDefault",
    "__version__",
    "set_testing",
}


def test_all_is_exactly_the_public_api() -> None:
    """__all__ lists every public name of the package, sorted, and nothing else."""
    assert set(baas_async.__all__) == PUBLIC
    assert baas_async.__all__ == sorted(baas_async.__all__, key=lambda n: (not n.isupper(), n))
    public_attributes = {
        name
        for name, value in vars(baas_async).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert public_attributes | {"__version__"} == PUBLIC


def test_emulator_all_is_its_public_api() -> None:
    """The emulator subpackage exports exactly its documented names."""
    assert baas_async.emulator.__all__ == ["Emulator", "EmulatorStats", "JobRecord"]


@pytest.mark.parametrize("name", sorted(PUBLIC - {"__version__", "USE_CLIENT_DEFAULT"}))
def test_every_public_name_is_documented(name: str) -> None:
    """Every public class has a docstring, and so has each of its public methods."""
    obj = getattr(baas_async, name)
    assert inspect.getdoc(obj)
    assert obj.__module__ == "baas_async"
    for attr, member in vars(obj).items():
        if not attr.startswith("_") and callable(member):
            assert inspect.getdoc(member), f"{name}.{attr} has no docstring"


def test_every_exception_is_a_baas_error() -> None:
    """All exception classes share the one base."""
    for name in PUBLIC:
        obj = getattr(baas_async, name)
        if isinstance(obj, type) and issubclass(obj, BaseException):
            assert issubclass(obj, BaaSError)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"client_secret": "s", "access_token": "t"}, ValueError, "not both"),
        ({"user_token": "u", "client_secret": "s"}, ValueError, "one kind"),
        ({"client_secret": "has space"}, ValueError, "client_secret"),
        ({"user_token": "a\r\nX-Evil: 1"}, ValueError, "user_token"),
        ({"base_url": "ftp://example"}, ValueError, "base_url"),
        ({"base_url": "http://127.0.0.1:99999"}, ValueError, "port"),
        ({"base_url": "http://a..b"}, ValueError, "host name"),
        ({"sync_timeout": 0}, ValueError, "sync_timeout"),
        ({"async_timeout": "300"}, TypeError, "async_timeout"),
        ({"limits": {"max_connections": 5}}, TypeError, "limits"),
        ({"http_client": object()}, TypeError, "http_client"),
        ({"env_id": "a b"}, ValueError, "env_id"),
    ],
)
def test_bad_construction_names_the_problem(kwargs: dict, error: type, match: str) -> None:
    """Conflicting or malformed settings raise at construction, naming the argument."""
    with pytest.raises(error, match=match):
        AsyncBaaS("demo", **kwargs)


@pytest.mark.parametrize("client_id", ["", None, "with space"])
def test_client_id_is_required(client_id: object) -> None:
    """A missing or malformed client id is refused."""
    with pytest.raises((TypeError, ValueError), match="client_id"):
        AsyncBaaS(client_id)  # type: ignore[arg-type]


def test_http_client_and_transport_exclude_each_other() -> None:
    """Only one way of sending can be given."""
    transport = httpx.AsyncHTTPTransport()
    with pytest.raises(ValueError, match="not both"):
        AsyncBaaS("demo", http_client=httpx.AsyncClient(), transport=transport)


def test_secrets_never_appear_in_repr_or_errors() -> None:
    """repr() names the surface and client id but no secret or token."""
    secret, token = "s3cr3t-value", "t0k3n-value"
    open_api = AsyncBaaS("demo", client_secret=secret)
    user = AsyncBaaS("demo", user_token=token)
    assert secret not in repr(open_api)
    assert "open API" in repr(open_api)
    assert token not in repr(user)
    with pytest.raises(ValueError, match="client_secret") as info:
        AsyncBaaS("demo", client_secret=secret + " ")
    assert secret not in str(info.value)


def test_default_hosts_follow_the_surface() -> None:
    """The client API and the open API have their own default hosts."""
    assert "cloud.minapp.com" in repr(AsyncBaaS("demo", access_token="t"))
    assert "myminapp.com" in repr(AsyncBaaS("demo"))


def test_arguments_after_client_id_are_keyword_only() -> None:
    """A flag can never land in the wrong slot by position."""
    with pytest.raises(TypeError):
        AsyncBaaS("demo", "token")  # type: ignore[misc]
    params = inspect.signature(AsyncBaaS.invoke).parameters
    assert params["sync"].kind is inspect.Parameter.KEYWORD_ONLY
    assert params["timeout"].kind is inspect.Parameter.KEYWORD_ONLY
