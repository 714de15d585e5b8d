"""The Citrix API over aiohttp: one connection pool per run, one async method per endpoint.

This is the only module that imports aiohttp. `protocol.py` builds the URLs and headers and
reads the answers; this module sends them, through the run's rate limiter and concurrency
limit, retries with the policy of `retry.py`, renews the token after a 401, and turns every
aiohttp or timeout exception into an `ApiError` (httpx's `map_httpcore_exceptions` is the
model: most specific first, `raise ... from exc`). Nothing above this module sees an aiohttp
type.

Failed attempts are logged at INFO and a request that fails for good at WARNING, with the
machine or path, the status, the kind and the transaction id; never a header or a token.
"""

from __future__ import annotations

import contextlib
import logging
import random
import ssl
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp
import anyio
import yarl
from tenacity import AsyncRetrying, RetryCallState

from collector.auth import BearerAuth, ClientCredentialsAuth, OnPremAuth, TokenProvider
from collector.config import AuthMethod, Config, Credentials
from collector.errors import ApiError, AuthError, ConfigError, SetupRejectedError
from collector.limiter import AdaptiveRateLimiter
from collector.models import ErrorKind, RunStats
from collector.protocol import (
    ME_PATH,
    PAGE_LIMIT,
    SITE_SESSIONS_PATH,
    Answer,
    build_url,
    continuation_token,
    decipher,
    invalid_payload,
    items_of,
    machines_path,
    request_headers,
    sessions_path,
    site_id_from_me,
    throttle_delay,
    transaction_id_of,
    transaction_note,
    utc_now,
)
from collector.retry import make_retrying

log = logging.getLogger("collector.client")

Sleep = Callable[[float], Awaitable[None]]
POOL_SPARE = 4  # connections beyond `concurrency`: token calls, a page fetched alongside


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """What the client needs of the configuration."""

    base_url: str
    customer_id: str
    site_id: str = ""
    request_timeout_s: float = 60.0
    max_attempts: int = 6
    max_backoff_s: float = 120.0
    fields: tuple[str, ...] = ()
    concurrency: int = 32
    verify_tls: bool = True
    ca_bundle: str = ""

    @classmethod
    def from_config(cls, config: Config) -> ClientSettings:
        api, collect = config.api, config.collect
        return cls(
            base_url=api.base_url,
            customer_id=api.customer_id,
            site_id=api.site_id,
            request_timeout_s=collect.request_timeout_s,
            max_attempts=collect.max_attempts,
            max_backoff_s=collect.max_backoff_s,
            fields=collect.fields,
            concurrency=collect.concurrency,
            verify_tls=api.verify_tls,
            ca_bundle=api.ca_bundle,
        )


@dataclass(slots=True)
class SessionsAnswer:
    """The sessions of one machine, the transaction id of the answer and the attempts made."""

    items: list[dict[str, Any]]
    transaction_id: str | None
    attempts: int


class HttpTransport:
    """Sends one request: rate limiter first, then at most `concurrency` exchanges in flight.

    The capacity limiter is held only for the exchange itself, never while waiting for a
    token, so a renewal (which is itself an exchange) cannot deadlock behind data calls.
    Every exchange counts in `stats.requests`; 429s in `stats.throttled` and in the limiter.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        limiter: AdaptiveRateLimiter,
        stats: RunStats,
        *,
        concurrency: int,
        wall: Callable[[], datetime] = utc_now,
    ) -> None:
        self.session = session
        self.limiter = limiter
        self.stats = stats
        self.capacity = anyio.CapacityLimiter(concurrency)
        self.wall = wall

    async def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        data: bytes | None = None,
    ) -> Answer:
        """The whole answer to one request.

        Raises `ApiError` when no answer came: retryable `timeout` for a timeout, retryable
        `network` for a refused or reset connection or a body cut short, and non-retryable
        `network` for an invalid URL or a TLS certificate that is not trusted.
        """
        return await self.deliver(await self.limiter.acquire(), method, url, headers, data)

    async def deliver(
        self,
        sent_at: float,
        method: str,
        url: str,
        headers: Mapping[str, str],
        data: bytes | None = None,
    ) -> Answer:
        """`send` once the rate limiter has granted the request at `sent_at`."""
        self.stats.requests += 1
        async with self.capacity:
            answer = await self.exchange(method, url, headers, data)
        if answer.status == 429:
            self.stats.throttled += 1
            delay = throttle_delay(answer.headers, answer.body, now=self.wall())
            self.limiter.on_throttle(delay, sent_at)
        elif 200 <= answer.status < 300:
            self.limiter.on_success()
        return answer

    async def exchange(
        self, method: str, url: str, headers: Mapping[str, str], data: bytes | None
    ) -> Answer:
        target = yarl.URL(url, encoded=True)  # built and encoded by protocol: sent as is
        try:
            async with self.session.request(
                method, target, headers=headers, data=data, allow_redirects=False
            ) as response:
                body = await response.read()
                return Answer(response.status, response.headers, body)
        except TimeoutError as exc:  # asyncio's and aiohttp's timeouts alike
            raise ApiError(
                f"no answer within the request timeout ({method} {target.path})",
                kind=ErrorKind.TIMEOUT,
                retryable=True,
            ) from exc
        except aiohttp.ClientConnectorCertificateError as exc:
            raise ApiError(
                f"the TLS certificate of {target.host} is not trusted ({exc.certificate_error}):"
                " give the CA in [api] ca_bundle, or set [api] verify_tls = false",
                kind=ErrorKind.NETWORK,
                retryable=False,
            ) from exc
        except aiohttp.InvalidURL as exc:
            raise ApiError(
                f"invalid URL {url}: check [api] base_url", kind=ErrorKind.NETWORK
            ) from exc
        except aiohttp.ClientPayloadError as exc:
            raise ApiError(
                f"the answer was cut short ({method} {target.path}): {exc}",
                kind=ErrorKind.NETWORK,
                retryable=True,
            ) from exc
        except aiohttp.ServerDisconnectedError as exc:
            raise ApiError(
                f"the server closed the connection ({method} {target.path})",
                kind=ErrorKind.NETWORK,
                retryable=True,
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise ApiError(
                f"connection to {target.host} failed: {exc or type(exc).__name__}",
                kind=ErrorKind.NETWORK,
                retryable=True,
            ) from exc


def retry_policy(
    settings: ClientSettings,
    stats: RunStats,
    *,
    sleep: Sleep = anyio.sleep,
    rng: Callable[[], float] = random.random,
) -> Callable[[], AsyncRetrying]:
    """A factory of fresh retry loops with the run's policy; each retry counts in `stats`."""

    def count_retry(state: RetryCallState) -> None:
        stats.retries += 1

    def retrying() -> AsyncRetrying:
        return make_retrying(
            max_attempts=settings.max_attempts,
            max_backoff_s=settings.max_backoff_s,
            sleep=sleep,
            rng=rng,
            before_sleep=count_retry,
        )

    return retrying


class CitrixClient:
    """The API calls of a run: one machine's sessions, the site id, paged lists.

    The session, the token provider and the rate limiter belong to the caller (see
    `open_client`); `sleep` and `rng` are the retry policy's, injectable for tests.
    """

    def __init__(
        self,
        settings: ClientSettings,
        *,
        session: aiohttp.ClientSession,
        auth: TokenProvider,
        limiter: AdaptiveRateLimiter,
        stats: RunStats,
        sleep: Sleep = anyio.sleep,
        rng: Callable[[], float] = random.random,
        transport: HttpTransport | None = None,
        wall: Callable[[], datetime] = utc_now,
    ) -> None:
        self.settings = settings
        self.auth = auth
        self.stats = stats
        self.transport = transport or HttpTransport(
            session, limiter, stats, concurrency=settings.concurrency, wall=wall
        )
        self.wall = wall
        self.site_id: str | None = settings.site_id or None
        self._site_lock = anyio.Lock()
        self._confirmed = False  # a call with the site's InstanceId has succeeded

        self.retrying = retry_policy(settings, stats, sleep=sleep, rng=rng)

    # --- endpoints -------------------------------------------------------------------------

    async def get_machine_sessions(self, name: str) -> SessionsAnswer:
        """The sessions of machine `name` (`DOMAIN\\NAME`, DNS name or Id).

        Raises `ApiError` when the machine cannot be collected: `not_found` (404) and
        `forbidden` (403 after the run's first success, 400, 406) at once; `throttled`,
        `server_error`, `timeout`, `network` or `invalid_response` once `max_attempts` are
        spent; `attempts` tells how many were made. Raises `AuthError` when the credentials
        are refused, and `SetupRejectedError` for a 403 or 406 before any call of the run
        succeeded (the configuration is wrong: every machine would fail alike).
        """
        params = [("fields", ",".join(self.settings.fields))] if self.settings.fields else []
        payload, transaction_id, attempts = await self._call(
            sessions_path(name), params, subject=f"machine {name}"
        )
        return SessionsAnswer(items_of(payload), transaction_id, attempts)

    async def resolve_site_id(self) -> str:
        """The site (instance) id: `[api] site_id`, else `Customers[0].Sites[0].Id` of `/me`.

        Raises `AuthError`, `SetupRejectedError` or `ApiError` as the other calls do, and a
        non-retryable `ApiError` (`invalid_response`) if `/me` lists no site.
        """
        if self.site_id:
            return self.site_id
        async with self._site_lock:
            if not self.site_id:
                payload, _, _ = await self._call(ME_PATH, (), subject="/me", instance=False)
                self.site_id = site_id_from_me(payload)
        return self.site_id

    async def pages(
        self, path: str, params: Iterable[tuple[str, str]] = ()
    ) -> AsyncGenerator[list[dict[str, Any]], None]:
        """The `Items` of each page of a list, following `ContinuationToken` (`limit=1000`).

        Raises what `get_machine_sessions` raises, and a non-retryable `invalid_response`
        `ApiError` if the server hands back the same continuation token twice.
        """
        base = [*params, ("limit", str(PAGE_LIMIT))]
        token: str | None = None
        while True:
            query = base if token is None else [*base, ("continuationToken", token)]
            payload, _, _ = await self._call(path, query, subject=path)
            yield items_of(payload)
            following = continuation_token(payload)
            if following is None:
                return
            if following == token:
                raise invalid_payload(f"{path} repeated its continuation token")
            token = following

    def machines(
        self, delivery_group: str = "", catalog: str = ""
    ) -> AsyncGenerator[list[dict[str, Any]], None]:
        """The site's machines, or one delivery group's or catalog's, page by page."""
        return self.pages(machines_path(delivery_group, catalog))

    def site_sessions(self) -> AsyncGenerator[list[dict[str, Any]], None]:
        """Every session of the site, page by page (`GET /cvad/manage/Sessions`)."""
        fields = self.settings.fields
        return self.pages(SITE_SESSIONS_PATH, [("fields", ",".join(fields))] if fields else [])

    # --- one request, with retries ---------------------------------------------------------

    async def _call(
        self,
        path: str,
        params: Iterable[tuple[str, str]],
        *,
        subject: str,
        instance: bool = True,
    ) -> tuple[Any, str | None, int]:
        """GET `path` with retries: the parsed answer, its transaction id, the attempts made."""
        url = build_url(self.settings.base_url, path, params)
        attempts = 0
        result: tuple[Any, str | None] = (None, None)
        try:
            async for attempt in self.retrying():
                with attempt:
                    attempts += 1
                    try:
                        result = await self._attempt(url, instance=instance)
                    except ApiError as exc:
                        log.info(
                            "%s: attempt %d failed: %s (%s, status %s, transaction %s)",
                            subject,
                            attempts,
                            exc.message,
                            exc.kind.value,
                            exc.status,
                            exc.transaction_id,
                        )
                        raise
        except ApiError as exc:
            exc.attempts = attempts
            log.warning(
                "%s failed after %d attempt%s: %s (%s, status %s, transaction %s)",
                subject,
                attempts,
                "" if attempts == 1 else "s",
                exc.message,
                exc.kind.value,
                exc.status,
                exc.transaction_id,
            )
            raise
        return result[0], result[1], attempts

    async def _attempt(self, url: str, *, instance: bool) -> tuple[Any, str | None]:
        """One attempt: the exchange, and after a 401 one renewal and a resend."""
        instance_id = await self.resolve_site_id() if instance else None
        answer, token = await self._send(url, instance_id)
        if answer.status == 401:
            await self.auth.renew(token)  # raises AuthError if it cannot be renewed
            answer, _ = await self._send(url, instance_id)
            if answer.status == 401:
                raise AuthError(
                    "the API refused a freshly issued token (HTTP 401 twice"
                    f"{transaction_note(transaction_id_of(answer.headers))}): check that the API "
                    f"client has access to customer {self.settings.customer_id} "
                    "([api] customer_id) and that the token is meant for this API host "
                    "([api] region, base_url)"
                )
        try:
            payload = decipher(answer.status, answer.headers, answer.body, now=self.wall())
        except ApiError as exc:
            if exc.status in (403, 406) and not self._confirmed:
                raise SetupRejectedError(self._rejected(exc)) from exc
            raise
        if instance:
            self._confirmed = True
        return payload, transaction_id_of(answer.headers)

    async def _send(self, url: str, instance_id: str | None) -> tuple[Answer, str]:
        """One exchange; the token is taken once the rate limiter lets the request go, so a
        pause cannot leave it to expire in between."""
        sent_at = await self.transport.limiter.acquire()
        token = await self.auth.token()
        headers = request_headers(
            token=token,
            customer_id=self.settings.customer_id,
            instance_id=instance_id,
            transaction_id=str(uuid.uuid4()),  # fresh for every attempt: each one is logged
        )
        try:
            answer = await self.transport.deliver(sent_at, "GET", url, headers)
        except ApiError as exc:
            if not exc.retryable and not self._confirmed:
                raise SetupRejectedError(f"{exc.message} (on the first calls of the run)") from exc
            raise
        return answer, token

    def _rejected(self, exc: ApiError) -> str:
        where = f"{exc.message}{transaction_note(exc.transaction_id)}"
        if exc.status == 406:
            return (
                f"the API refused the request format on the first call of the run ({where}). "
                "collector always sends Accept: application/json, so this is a bug: please "
                "report it with the transaction id"
            )
        site = self.site_id or "(not resolved yet)"
        return (
            f"the API refused access on the first call of the run ({where}). Check that the "
            "API client has permission to read machines and sessions (Citrix Cloud > Identity "
            f"and Access Management > API Access), that [api] customer_id "
            f"({self.settings.customer_id}) is this client's customer, and that [api] site_id "
            f"({site}) is a site of that customer"
        )


# --- the run's client ------------------------------------------------------------------------


def tls_setting(settings: ClientSettings) -> ssl.SSLContext | bool:
    """aiohttp's `ssl=`: False without verification, a context for a private CA, else True.

    Raises `ConfigError` if `[api] ca_bundle` cannot be read.
    """
    if not settings.verify_tls:
        return False
    if settings.ca_bundle:
        try:
            return ssl.create_default_context(cafile=settings.ca_bundle)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"[api] ca_bundle {settings.ca_bundle} cannot be read as PEM certificates: "
                f"{getattr(exc, 'strerror', None) or exc}"
            ) from exc
    return True


def make_auth(
    config: Config,
    credentials: Credentials,
    *,
    transport: HttpTransport,
    retrying: Callable[[], AsyncRetrying],
    stats: RunStats,
) -> TokenProvider:
    """The token provider of `[auth] method`, naming the configured variables in messages."""
    auth = config.auth
    if auth.method is AuthMethod.BEARER:
        return BearerAuth(credentials.bearer_token, auth.bearer_token_env)
    if auth.method is AuthMethod.ONPREM:
        return OnPremAuth(
            config.api.base_url,
            credentials.username,
            credentials.password,
            user_env=auth.username_env,
            password_env=auth.password_env,
            transport=transport,
            retrying=retrying,
            stats=stats,
        )
    return ClientCredentialsAuth(
        auth.token_url,
        credentials.client_id,
        credentials.client_secret,
        id_env=auth.client_id_env,
        secret_env=auth.client_secret_env,
        transport=transport,
        retrying=retrying,
        stats=stats,
    )


@contextlib.asynccontextmanager
async def open_client(
    config: Config,
    credentials: Credentials,
    stats: RunStats,
    *,
    limiter: AdaptiveRateLimiter | None = None,
) -> AsyncIterator[CitrixClient]:
    """The run's client: one connection pool, one token provider, one rate limiter.

    Raises `ConfigError` if `[api] ca_bundle` cannot be read. The session is closed on exit.
    """
    settings = ClientSettings.from_config(config)
    tls = tls_setting(settings)
    limiter = limiter or AdaptiveRateLimiter(config.collect.rate, max_pause=settings.max_backoff_s)
    connector = aiohttp.TCPConnector(
        limit=settings.concurrency + POOL_SPARE, ssl=tls, keepalive_timeout=30.0
    )
    timeout = aiohttp.ClientTimeout(total=settings.request_timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        transport = HttpTransport(session, limiter, stats, concurrency=settings.concurrency)
        auth = make_auth(
            config,
            credentials,
            transport=transport,
            retrying=retry_policy(settings, stats),
            stats=stats,
        )
        yield CitrixClient(
            settings,
            session=session,
            auth=auth,
            limiter=limiter,
            stats=stats,
            transport=transport,
        )
