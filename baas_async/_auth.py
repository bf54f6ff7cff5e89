"""Open-API access tokens: the OAuth code exchange, caching, and single-flight refresh."""

from __future__ import annotations

import os
import time
from urllib.parse import urljoin, urlsplit

import anyio

from ._exceptions import InvalidResponse
from ._sansio import (
    ACCESS_TOKEN_PATH,
    AUTHORIZE_PATH,
    decode_token_reply,
    encode_json,
    read_access_token,
    read_code,
)
from ._transports import Call, RawResponse, Sender, split_base_url

__all__ = ["TokenSource"]

_JSON = [("Content-Type", "application/json")]
_MAX_REDIRECTS = 5
#: Refresh this long before ``expires_in`` runs out (at most a tenth of the lifetime), so a
#: token never expires between being read and arriving.
_EXPIRY_MARGIN = 60.0


class TokenSource:
    """Holds the open API's bearer token and renews it when it expires or is refused.

    Renewals are single-flight: however many calls find the token stale at once, one code
    exchange runs and the rest wait for its token. A renewal runs inside the deadline of
    the call that needed it and dies with that call.
    """

    def __init__(
        self,
        client_id: str,
        client_secret: str | None,
        access_token: str | None,
        *,
        base_url: str,
    ) -> None:
        scheme, _, _, self._prefix = split_base_url(base_url)
        self._origin = (scheme, urlsplit(base_url).netloc)
        self._client_id = client_id
        self._client_secret = client_secret
        self._token = access_token
        self._expires_at = float("inf") if access_token else 0.0
        self._exchanges = 0  # completed exchanges, so lock waiters can tell one happened
        self._lock = anyio.Lock()

    @property
    def can_refresh(self) -> bool:
        """Whether a client secret is at hand to obtain new tokens."""
        return self._client_secret is not None

    def _fresh(self) -> str | None:
        if self._token is not None and time.monotonic() < self._expires_at:
            return self._token
        return None

    async def token(self, sender: Sender, call_timeout: float | None) -> str:
        """A token valid for now, exchanging credentials for one if needed."""
        token = self._fresh()
        if token is not None:
            return token
        seen = self._exchanges
        async with self._lock:
            if self._exchanges != seen and self._token is not None:
                # An exchange finished while we queued for the lock: its token is ours too,
                # however short-lived it is.
                return self._token
            return await self._exchange(sender, call_timeout)

    async def renew(self, sender: Sender, refused: str, call_timeout: float | None) -> str:
        """A new token after the platform refused ``refused`` (HTTP 401).

        If another call already renewed it meanwhile, that token is returned instead.
        """
        async with self._lock:
            if self._token is not None and self._token != refused:
                return self._token
            return await self._exchange(sender, call_timeout)

    async def _exchange(self, sender: Sender, call_timeout: float | None) -> str:
        assert self._client_secret is not None
        credentials = {"client_id": self._client_id, "client_secret": self._client_secret}
        call = Call(None, os.urandom(16).hex(), call_timeout, traced=sender.traced)
        body = encode_json(credentials, name="credentials")
        reply = await sender.send(call, "POST", AUTHORIZE_PATH, _JSON, body)
        reply = await self._follow_redirects(sender, call, reply, body)
        code = read_code(decode_token_reply(*reply), reply.status, reply.body)
        body = encode_json(
            {**credentials, "code": code, "grant_type": "authorization_code"}, name="credentials"
        )
        reply = await sender.send(call, "POST", ACCESS_TOKEN_PATH, _JSON, body)
        token, expires_in = read_access_token(decode_token_reply(*reply), reply.status, reply.body)
        margin = min(_EXPIRY_MARGIN, expires_in / 10)
        self._token = token
        self._expires_at = time.monotonic() + expires_in - margin
        self._exchanges += 1
        return token

    async def _follow_redirects(
        self, sender: Sender, call: Call, reply: RawResponse, body: bytes
    ) -> RawResponse:
        """Follow the authorize step's redirects (the platform answers through two 302s).

        Like browsers and httpx, a 301/302/303 after a POST is followed with a GET, a 307/308
        with the same POST. Only the platform's own origin is followed: the credentials are
        for it alone, and the sender is bound to it.
        """
        current = self._prefix + AUTHORIZE_PATH
        for _ in range(_MAX_REDIRECTS + 1):
            if reply.status not in (301, 302, 303, 307, 308):
                return reply
            location = reply.headers.get("location")
            if not location:
                break
            target = urlsplit(urljoin(current, location))
            if target.netloc and (target.scheme, target.netloc) != self._origin:
                raise InvalidResponse(
                    f"token exchange: redirected off the platform's origin to {location!r}",
                    status=reply.status,
                    body=reply.body,
                )
            current = target.path + (f"?{target.query}" if target.query else "")
            path = current.removeprefix(self._prefix)
            if reply.status in (307, 308):
                reply = await sender.send(call, "POST", path, _JSON, body)
            else:
                reply = await sender.send(call, "GET", path, [], b"")
        raise InvalidResponse(
            f"token exchange: too many or broken redirects (last HTTP {reply.status})",
            status=reply.status,
            body=reply.body,
        )
