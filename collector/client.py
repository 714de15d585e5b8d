"""The Citrix API calls of a run: one machine's sessions, `/me`, paged lists.

The top of the request path (see `transport.py`): it knows the endpoints, the retry policy
and the 401 resend, and sends each request down one `Transport`, which paces it, adds the
token and puts it on the wire. `protocol.py` builds the URLs and headers and reads the
answers. Nothing here imports aiohttp or knows how pacing decides.

Failed attempts are logged at INFO and a request that fails for good at WARNING, with the
machine or path, the status, the kind and the transaction id we sent; never a header or a
token.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import AsyncGenerator, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import anyio

from collector.auth import TokenProvider
from collector.config import Config
from collector.errors import ApiError, AuthError, SetupRejectedError
from collector.models import RunStats
from collector.protocol import (
    ME_PATH,
    PAGE_LIMIT,
    SITE_SESSIONS_PATH,
    Answer,
    build_url,
    continuation_token,
    decipher,
    header,
    invalid_payload,
    items_of,
    machines_path,
    parse_retry_after,
    request_headers,
    sessions_path,
    site_id_from_me,
    transaction_note,
    utc_now,
)
from collector.retry import RetryPolicy, Sleep, make_policy
from collector.transport import Request, Transport

log = logging.getLogger("collector.client")

Params = list[tuple[str, str]]


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
    """The sessions of one machine (every page), the last transaction id, the attempts made."""

    items: list[dict[str, Any]]
    transaction_id: str | None
    attempts: int


def retry_policy(
    settings: ClientSettings,
    stats: RunStats,
    *,
    sleep: Sleep = anyio.sleep,
    rng: Callable[[], float] = random.random,
) -> RetryPolicy:
    """The run's retry policy; each retry counts in `stats.retries`."""

    def count(exc: ApiError, wait: float) -> None:
        stats.retries += 1

    return make_policy(
        max_attempts=settings.max_attempts,
        max_backoff_s=settings.max_backoff_s,
        sleep=sleep,
        rng=rng,
        on_retry=count,
    )


class CitrixClient:
    """The API calls of a run, sent down `transport` with the `retry` policy.

    `auth` is the provider the authorisation layer takes its tokens from: the client asks it
    for a renewal after a 401, naming the token that was refused.
    """

    def __init__(
        self,
        settings: ClientSettings,
        *,
        transport: Transport,
        auth: TokenProvider,
        stats: RunStats,
        retry: RetryPolicy | None = None,
        wall: Callable[[], datetime] = utc_now,
    ) -> None:
        self.settings = settings
        self.transport = transport
        self.auth = auth
        self.stats = stats
        self.retry = retry or retry_policy(settings, stats)
        self.wall = wall
        self.site_id: str | None = settings.site_id or None
        self._me_done = False  # /me answered: the base URL, token and customer id work
        self._me_lock = anyio.Lock()
        self._confirmed = False  # a call with the site's InstanceId has succeeded
        self._warned_retry_after = False

    # --- endpoints -------------------------------------------------------------------------

    async def get_machine_sessions(self, name: str) -> SessionsAnswer:
        """The sessions of machine `name` (`DOMAIN\\NAME`, DNS name or Id), every page of them.

        Raises `ApiError` when the machine cannot be collected: `not_found` (404), `forbidden`
        (403 after the run's first success) and `rejected` (400, 406) at once;
        `invalid_response` if a continuation token comes back twice; `throttled`,
        `server_error`, `timeout`, `network` or `invalid_response` once `max_attempts` are
        spent. `attempts` counts every page's. Raises `AuthError` when the credentials are
        refused, and `SetupRejectedError` for a 403 or 406 before any call of the run
        succeeded (the configuration is wrong: every machine would fail alike).
        """
        fields = self.settings.fields
        params: Params = [("fields", ",".join(fields))] if fields else []
        path, subject = sessions_path(name), f"machine {name}"
        payload, transaction_id, attempts = await self._call(path, params, subject=subject)
        items = items_of(payload)
        token = continuation_token(payload)
        seen: set[str] = set()
        while token is not None:  # SPEC 5.1: a machine's answer may be paged too
            if token in seen:
                exc = invalid_payload(f"{subject} repeated its continuation token")
                exc.transaction_id, exc.attempts = transaction_id, attempts
                self._log_failure(subject, exc)
                raise exc
            seen.add(token)
            page = [*params, ("continuationToken", token)]
            payload, transaction_id, more = await self._call(path, page, subject=subject)
            attempts += more
            items += items_of(payload)
            token = continuation_token(payload)
        return SessionsAnswer(items, transaction_id, attempts)

    async def resolve_site_id(self) -> str:
        """Call `/me` once (every run does: it proves base URL, token and customer id); the
        site (instance) id is `[api] site_id`, else `Customers[0].Sites[0].Id` of `/me`.

        Raises `SetupRejectedError` if `/me` answers 404 (the base URL is wrong), `AuthError`
        or `ApiError` as the other calls do, and a non-retryable `ApiError`
        (`invalid_response`) if `/me` lists no site and none is configured.
        """
        if not self._me_done:
            async with self._me_lock:
                if not self._me_done:
                    payload, _, _ = await self._call(
                        ME_PATH, [], subject="/me", instance=False, listing=True
                    )
                    if self.site_id is None:
                        self.site_id = site_id_from_me(payload)
                    self._me_done = True
        assert self.site_id is not None
        return self.site_id

    async def pages(
        self, path: str, params: Iterable[tuple[str, str]] = ()
    ) -> AsyncGenerator[list[dict[str, Any]], None]:
        """The `Items` of each page of a list, following `ContinuationToken` (`limit=1000`).

        Raises what `get_machine_sessions` raises, `SetupRejectedError` for a 404 (a listing
        is never missing: the base URL is wrong), and a non-retryable `invalid_response`
        `ApiError` if the server hands back a continuation token twice.
        """
        base = [*params, ("limit", str(PAGE_LIMIT))]
        token: str | None = None
        seen: set[str] = set()
        while True:
            query = base if token is None else [*base, ("continuationToken", token)]
            payload, _, _ = await self._call(path, query, subject=path, listing=True)
            yield items_of(payload)
            token = continuation_token(payload)
            if token is None:
                return
            if token in seen:
                raise invalid_payload(f"{path} repeated its continuation token")
            seen.add(token)

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
        params: Params,
        *,
        subject: str,
        instance: bool = True,
        listing: bool = False,
    ) -> tuple[Any, str | None, int]:
        """GET `path` with retries: the parsed answer, its transaction id, the attempts made.

        `listing`: a 404 means the base URL is wrong, not that one machine is missing.
        """
        if instance and not self._me_done:
            await self.resolve_site_id()
        url = build_url(self.settings.base_url, path, params)
        number = 0

        async def attempt() -> tuple[Any, str | None]:
            nonlocal number
            number += 1
            try:
                return await self._attempt(url, instance=instance, listing=listing)
            except ApiError as exc:
                log.info(
                    "%s: attempt %d failed: %s (%s, status %s, transaction %s)",
                    subject,
                    number,
                    exc.message,
                    exc.kind.value,
                    exc.status,
                    exc.transaction_id,
                )
                raise

        try:
            (payload, transaction_id), attempts = await self.retry.call(attempt)
        except ApiError as exc:
            self._log_failure(subject, exc)
            raise
        return payload, transaction_id, attempts

    async def _attempt(self, url: str, *, instance: bool, listing: bool) -> tuple[Any, str | None]:
        """One attempt: the exchange, and after a 401 one renewal and a resend."""
        answer, request = await self._send(url, instance)
        if answer.status == 401:
            await self.auth.renew(request.bearer)  # raises AuthError if it cannot be renewed
            answer, request = await self._send(url, instance)
            if answer.status == 401:
                raise AuthError(
                    "the API refused a freshly issued token (HTTP 401 twice"
                    f"{transaction_note(sent_id(request))}): check that the API client has "
                    f"access to customer {self.settings.customer_id} ([api] customer_id) and "
                    "that the token is meant for this API host ([api] region, base_url)"
                )
        try:
            payload = decipher(answer.status, answer.headers, answer.body, now=self.wall())
        except ApiError as exc:
            exc.transaction_id = sent_id(request)  # ours, which a 502 from a gateway lacks
            self._check_retry_after(answer)
            if listing and exc.status == 404:
                raise SetupRejectedError(self._wrong_base(url, exc)) from exc
            if exc.status in (403, 406) and not self._confirmed:
                raise SetupRejectedError(self._rejected(exc)) from exc
            raise
        if instance:
            self._confirmed = True
        return payload, sent_id(request)

    async def _send(self, url: str, instance: bool) -> tuple[Answer, Request]:
        """One exchange down the transport, with a fresh transaction id."""
        request = Request(
            "GET",
            url,
            request_headers(
                customer_id=self.settings.customer_id,
                instance_id=self.site_id if instance else None,
                transaction_id=str(uuid.uuid4()),  # fresh for every attempt: each is logged
            ),
        )
        try:
            return await self.transport.send(request), request
        except ApiError as exc:
            exc.transaction_id = sent_id(request)  # a timeout or a reset has no answer to ask
            if not exc.retryable and not self._confirmed:
                raise SetupRejectedError(f"{exc.message} (on the first calls of the run)") from exc
            raise

    # --- messages --------------------------------------------------------------------------

    def _check_retry_after(self, answer: Answer) -> None:
        """Say once a run that a Retry-After could not be read (retryDelay or backoff stand in)."""
        value = header(answer.headers, "Retry-After")
        if value is None or self._warned_retry_after:
            return
        if parse_retry_after(value, self.wall()) is None:
            self._warned_retry_after = True
            log.warning(
                "the API sent a Retry-After that is neither seconds nor a date (%r); waiting "
                "for the body's retryDelay or the backoff instead (said once a run)",
                value[:64],
            )

    def _log_failure(self, subject: str, exc: ApiError) -> None:
        log.warning(
            "%s failed after %d attempt%s: %s (%s, status %s, transaction %s)",
            subject,
            exc.attempts,
            "" if exc.attempts == 1 else "s",
            exc.message,
            exc.kind.value,
            exc.status,
            exc.transaction_id,
        )

    def _wrong_base(self, url: str, exc: ApiError) -> str:
        return (
            f"GET {url} answered 404 ({exc.message}{transaction_note(exc.transaction_id)}): "
            f"[api] base_url ({self.settings.base_url}) looks wrong, since this endpoint "
            "exists on every site. Check it against your region's API host (citrix-api.md), "
            "with no path after the host for Citrix Cloud; or check [input] delivery_group and "
            "catalog if you set them"
        )

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


def sent_id(request: Request) -> str:
    """The `Citrix-TransactionId` we sent with `request`."""
    return request.headers["Citrix-TransactionId"]
