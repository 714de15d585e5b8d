"""Bearer tokens for the API: client credentials (cloud), a static token, or on-premises Basic.

A `TokenProvider` hands out the current token, cached until shortly before it expires, and
renews it after a 401. Renewal is single-flight: one lock per provider, so however many
workers find the token stale at once, the token endpoint sees one request (SPEC 5.2).

Providers send through a `Transport` (the run's pacer and connection pool, outside the
in-flight window: see `transport.PacedTransport`), so this module imports no HTTP library. Secrets
and tokens never appear in a message or a log line: messages name the environment
variables that hold them instead.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

import anyio

from collector.errors import ApiError, AuthError
from collector.models import RunStats
from collector.protocol import (
    ACCEPT,
    FORM_CONTENT_TYPE,
    TOKENS_PATH,
    TRANSACTION_HEADER,
    USER_AGENT,
    build_url,
    decipher,
    get_folded,
    parse_expires_at,
    parse_expires_in,
    read_error_body,
    token_form,
    transaction_id_of,
    transaction_note,
    utc_now,
)
from collector.retry import RetryPolicy
from collector.transport import Request, Transport

FALLBACK_LIFETIME_S = 3600.0  # documented lifetime of a Citrix Cloud token, if the answer omits it
RENEW_AHEAD_MAX_S = 300.0  # renew when less than a tenth of the lifetime, and at most this, is left


class TokenProvider(Protocol):
    """**Protocol:** the bearer token of every API call."""

    @property
    def renewable(self) -> bool:
        """False if a 401 cannot be cured by asking again (a static token)."""
        ...

    async def token(self) -> str:
        """The current token, fetched or renewed first if needed."""
        ...

    async def renew(self, stale: str) -> str:
        """A token other than `stale`, which the API refused (single-flight)."""
        ...


def renew_ahead(lifetime: float) -> float:
    """How long before expiry a token is renewed: a tenth of its lifetime, at most five minutes."""
    return min(lifetime / 10.0, RENEW_AHEAD_MAX_S)


class BearerAuth:
    """A token given in the environment: used as is, never renewed."""

    renewable = False

    def __init__(self, token: str, env_var: str) -> None:
        self._token = token
        self.env_var = env_var

    async def token(self) -> str:
        return self._token

    async def renew(self, stale: str) -> str:
        """Raises `AuthError`: a static token cannot be renewed."""
        raise AuthError(
            f"the API refused the bearer token in {self.env_var} (HTTP 401): it expired or is "
            f"invalid. Export a fresh token in {self.env_var}, or use "
            '[auth] method = "client_credentials" so tokens are renewed as they expire'
        )


class CachedTokenAuth:
    """The cache and the single-flight renewal shared by the providers that fetch tokens.

    A subclass implements `fetch()`, which returns a token and its lifetime in seconds.
    """

    renewable = True

    def __init__(
        self,
        *,
        transport: Transport,
        retrying: RetryPolicy,
        stats: RunStats,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = utc_now,
    ) -> None:
        self.transport = transport
        self.retrying = retrying
        self.stats = stats
        self.clock = clock
        self.wall = wall
        self._lock = anyio.Lock()
        self._token: str | None = None
        self._renew_at = 0.0  # clock time after which the token is renewed before use

    async def token(self) -> str:
        current = self._token
        if current is not None and self.clock() < self._renew_at:
            return current
        async with self._lock:
            # Another caller may have fetched it while this one waited for the lock.
            current = self._token
            if current is not None and self.clock() < self._renew_at:
                return current
            return await self._fetch_and_cache()

    async def renew(self, stale: str) -> str:
        async with self._lock:
            current = self._token
            if current is not None and current != stale and self.clock() < self._renew_at:
                return current  # renewed by another caller since `stale` was handed out
            return await self._fetch_and_cache()

    async def _fetch_and_cache(self) -> str:
        """Fetch with the retry policy; raises `AuthError` when no token can be had."""
        try:
            (token, lifetime), _ = await self.retrying.call(self.fetch)
        except ApiError as exc:
            raise AuthError(
                f"no token could be obtained from {self.describe()}: {exc.message}"
                f"{transaction_note(exc.transaction_id)}. The service may be down or throttling "
                "token requests; try again later"
            ) from exc
        self._token = token
        self._renew_at = self.clock() + lifetime - renew_ahead(lifetime)
        return token

    async def fetch(self) -> tuple[str, float]:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    async def post(self, url: str, headers: dict[str, str], data: bytes | None) -> Any:
        """POST to the token endpoint and decipher the answer.

        Raises `AuthError` for an answer that refuses the credentials or the endpoint, and
        `ApiError` for what the retry policy may cure (429, 5xx, no answer, bad JSON).
        """
        headers = {
            "Accept": ACCEPT,
            "User-Agent": USER_AGENT,
            TRANSACTION_HEADER: str(uuid.uuid4()),
            **headers,
        }
        self.stats.token_requests += 1
        answer = await self.transport.send(Request("POST", url, headers, data))
        if answer.status in (400, 401, 403):
            message, _ = read_error_body(answer.body)
            raise AuthError(
                self.refused(answer.status, message)
                + transaction_note(transaction_id_of(answer.headers))
            )
        try:
            return decipher(answer.status, answer.headers, answer.body, now=self.wall())
        except ApiError as exc:
            if exc.retryable:
                raise
            raise AuthError(
                f"the token endpoint {self.describe()} answered {exc.message}"
                f"{transaction_note(exc.transaction_id)}: check its address ([auth] token_url, "
                "[api] base_url and customer_id)"
            ) from exc

    def refused(self, status: int, message: str) -> str:
        raise NotImplementedError


class ClientCredentialsAuth(CachedTokenAuth):
    """Citrix Cloud: the OAuth2 client-credentials grant at `token_url` (citrix-api.md 1.1)."""

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str,
        *,
        id_env: str = "CITRIX_CLIENT_ID",
        secret_env: str = "CITRIX_CLIENT_SECRET",
        transport: Transport,
        retrying: RetryPolicy,
        stats: RunStats,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = utc_now,
    ) -> None:
        super().__init__(
            transport=transport, retrying=retrying, stats=stats, clock=clock, wall=wall
        )
        self.token_url = token_url
        self._form = token_form(client_id, client_secret).encode()
        self.id_env = id_env
        self.secret_env = secret_env

    def describe(self) -> str:
        return self.token_url

    def refused(self, status: int, message: str) -> str:
        reason = f": {message}" if message else ""
        return (
            f"the token endpoint {self.token_url} refused the API client (HTTP {status}{reason}). "
            f"Check the client id in {self.id_env} and the secret in {self.secret_env} (an API "
            "client of this customer, Citrix Cloud > Identity and Access Management > API "
            "Access), and [api] customer_id"
        )

    async def fetch(self) -> tuple[str, float]:
        # Exactly this Content-Type: a charset parameter is refused (citrix-api.md 1.1).
        payload = await self.post(self.token_url, {"Content-Type": FORM_CONTENT_TYPE}, self._form)
        token = get_folded(payload, "access_token") if isinstance(payload, dict) else None
        if not isinstance(token, str) or not token:
            raise AuthError(
                f"the token endpoint {self.token_url} answered without an access_token: check "
                "[auth] token_url"
            )
        try:
            lifetime = parse_expires_in(get_folded(payload, "expires_in"))
        except (TypeError, ValueError):
            lifetime = FALLBACK_LIFETIME_S  # a 401 renews it anyway if that was too long
        return token, lifetime


class OnPremAuth(CachedTokenAuth):
    """On-premises CVAD: `POST {base_url}/cvad/manage/Tokens` with Basic credentials."""

    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        *,
        user_env: str = "CITRIX_USERNAME",
        password_env: str = "CITRIX_PASSWORD",
        transport: Transport,
        retrying: RetryPolicy,
        stats: RunStats,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = utc_now,
    ) -> None:
        super().__init__(
            transport=transport, retrying=retrying, stats=stats, clock=clock, wall=wall
        )
        self.url = build_url(base_url, TOKENS_PATH)
        pair = f"{username}:{password}".encode()
        self._basic = "Basic " + base64.b64encode(pair).decode("ascii")
        self.user_env = user_env
        self.password_env = password_env

    def describe(self) -> str:
        return self.url

    def refused(self, status: int, message: str) -> str:
        reason = f": {message}" if message else ""
        return (
            f"the Delivery Controller {self.url} refused the administrator (HTTP {status}"
            f"{reason}). Check the user name (DOMAIN\\user) in {self.user_env} and the password "
            f"in {self.password_env}"
        )

    async def fetch(self) -> tuple[str, float]:
        payload = await self.post(self.url, {"Authorization": self._basic}, None)
        token = get_folded(payload, "Token") if isinstance(payload, dict) else None
        if not isinstance(token, str) or not token:
            raise AuthError(f"the Delivery Controller {self.url} answered without a Token")
        try:
            lifetime = parse_expires_at(str(get_folded(payload, "ExpiresAt")), self.wall())
        except ValueError:
            lifetime = FALLBACK_LIFETIME_S
        return token, max(lifetime, 1.0)
