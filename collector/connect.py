"""Part of the composition root (with `app.py`): builds the run's request path from the Config.

`open_client` stacks the layers of `transport.py` over one aiohttp pool, with one pacer for
every request of the run and the token provider of `[auth] method`, and hands back the
client. `loop_options` picks the event loop. Nothing else builds these pieces, so the layers
never know of each other beyond the one below.
"""

from __future__ import annotations

import contextlib
import importlib.util
import ssl
from collections.abc import AsyncIterator
from typing import Any

import anyio

from collector.auth import BearerAuth, ClientCredentialsAuth, OnPremAuth, TokenProvider
from collector.client import CitrixClient, ClientSettings, retry_policy
from collector.config import AuthMethod, Config, Credentials
from collector.errors import ConfigError
from collector.models import RunStats
from collector.pacing import Clock, Controller, Pacer
from collector.retry import RetryPolicy, Sleep
from collector.transport import AuthorizedTransport, PacedTransport, Transport
from collector.wire import AioHttpTransport


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
    transport: Transport,
    retrying: RetryPolicy,
    stats: RunStats,
) -> TokenProvider:
    """The token provider of `[auth] method`; its messages name where each secret came from
    (the variable, or the file of a `*_file` key)."""
    auth = config.auth

    def origin(attr: str, variable: str) -> str:
        return credentials.sources.get(attr, variable)

    if auth.method is AuthMethod.BEARER:
        return BearerAuth(credentials.bearer_token, origin("bearer_token", auth.bearer_token_env))
    if auth.method is AuthMethod.ONPREM:
        return OnPremAuth(
            config.api.base_url,
            credentials.username,
            credentials.password,
            user_env=origin("username", auth.username_env),
            password_env=origin("password", auth.password_env),
            transport=transport,
            retrying=retrying,
            stats=stats,
        )
    return ClientCredentialsAuth(
        auth.token_url,
        credentials.client_id,
        credentials.client_secret,
        id_env=origin("client_id", auth.client_id_env),
        secret_env=origin("client_secret", auth.client_secret_env),
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
    clock: Clock | None = None,
    rest: Sleep = anyio.sleep,
) -> AsyncIterator[CitrixClient]:
    """The run's client: one connection pool, one pacer, one token provider.

    `rest` is how a retry waits: the pool's `Crew.rest` lends the worker's place meanwhile.
    Raises `ConfigError` if `[api] ca_bundle` cannot be read. The pool is closed on exit.
    """
    settings = ClientSettings.from_config(config)
    tls = tls_setting(settings)
    controller = Controller(
        config.collect.rate, settings.concurrency, max_pause=settings.max_backoff_s
    )
    pacer = Pacer(controller, clock)
    stats.current_window = controller.window
    policy = retry_policy(settings, stats, sleep=rest)
    async with AioHttpTransport.open(
        concurrency=settings.concurrency, timeout_s=settings.request_timeout_s, tls=tls
    ) as wire:
        tokens = PacedTransport(wire, pacer, stats, windowed=False)
        auth = make_auth(config, credentials, transport=tokens, retrying=policy, stats=stats)
        paced = PacedTransport(AuthorizedTransport(wire, auth), pacer, stats)
        yield CitrixClient(settings, transport=paced, auth=auth, stats=stats, retry=policy)


def loop_options(use_uvloop: bool) -> dict[str, Any]:
    """`anyio.run` backend options: uvloop when asked for and installed (the `fast` extra)."""
    if use_uvloop and importlib.util.find_spec("uvloop") is not None:
        return {"use_uvloop": True}
    return {}
