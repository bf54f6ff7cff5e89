"""baas_async: an asyncio-native client for 知晓云 (MinApp) cloud functions.

>>> from baas_async import AsyncBaaS
>>> baas = AsyncBaaS("demo", base_url="http://127.0.0.1:8000")

See :class:`AsyncBaaS` for the credentials, deadlines and connection pool, and
``baas_async.emulator`` for the local emulator of the platform.
"""

from ._client import AsyncBaaS
from ._config import USE_CLIENT_DEFAULT, UseClientDefault
from ._exceptions import (
    BaaSError,
    ClientClosed,
    ConnectError,
    ConnectionLost,
    Forbidden,
    FunctionError,
    FunctionNotFound,
    HTTPStatusError,
    InvalidResponse,
    InvocationRejected,
    InvocationTimeout,
    PaymentRequired,
    RateLimited,
    ResponseTooLarge,
    ServerError,
    TransportError,
    Unauthorized,
)
from ._many import ItemResult
from ._models import AcceptedJob, FunctionErrorInfo, InvokeResult
from ._retry import RetryBudget, RetryPolicy, set_testing
from ._version import __version__

__all__ = [
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
]

# Public names report the package, not the private module they live in.
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type) or callable(_obj):
        _obj.__module__ = __name__
del _name, _obj
