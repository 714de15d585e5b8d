"""The request path below the client, one layer each way down, every layer one `send`:

    PacedTransport       the pacer: window and schedule; 429 and 2xx reported to the controller
      AuthorizedTransport  adds the token once pacing let the request go, so it is never stale
        AioHttpTransport     `wire.py`: aiohttp, its exceptions mapped to `ApiError` there

(httpx's transports are the model: each wraps the next one, and a test puts a `MockTransport`
at any seam.) No HTTP library here. Headers and tokens never reach a message.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import anyio.lowlevel

from collector.models import RunStats
from collector.pacing import Pacer
from collector.protocol import Answer, auth_value, throttle_delay, utc_now


@dataclass(slots=True)
class Request:
    """One HTTP request on its way down; `bearer` is the token the authorisation layer used."""

    method: str
    url: str  # built and encoded by protocol: sent as is
    headers: dict[str, str]
    data: bytes | None = None
    bearer: str = field(default="", repr=False)


class Transport(Protocol):
    """**Protocol:** sends one request and returns the whole answer.

    Raises `ApiError` (kind `network` or `timeout`) if no answer came.
    """

    async def send(self, request: Request) -> Answer: ...


class TokenSource(Protocol):
    """**Protocol:** the current bearer token (fetched or renewed first if needed)."""

    async def token(self) -> str: ...


class MockTransport:
    """A transport that answers with a function: the seam for tests (httpx's MockTransport)."""

    def __init__(self, handler: Callable[[Request], Awaitable[Answer]]) -> None:
        self.handler = handler

    async def send(self, request: Request) -> Answer:
        return await self.handler(request)


class PacedTransport:
    """Every request waits for the pacer; every one counts in `stats.requests`.

    `windowed=False` is for token calls: they keep to the schedule but not to the window,
    which the data calls waiting for that very token may fill.
    """

    def __init__(
        self,
        inner: Transport,
        pacer: Pacer,
        stats: RunStats,
        *,
        windowed: bool = True,
        wall: Callable[[], datetime] = utc_now,
    ) -> None:
        self.inner = inner
        self.pacer = pacer
        self.stats = stats
        self.windowed = windowed
        self.wall = wall

    async def send(self, request: Request) -> Answer:
        pacer, stats = self.pacer, self.stats
        grant = await pacer.acquire(windowed=self.windowed)
        stats.requests += 1
        try:
            answer = await self.inner.send(request)
        finally:
            handed_over = pacer.release(grant)
        if handed_over:
            # The caller that got the place sends before this answer is decoded: its request
            # then travels while this one's sessions are flattened, and a window the server
            # limits stays full (the in-flight-bound bench, BENCHMARKS.md).
            await anyio.lowlevel.checkpoint()
        status = answer.status
        if 200 <= status < 300:
            pacer.on_success(grant)
        elif status == 429:
            stats.throttled += 1
            pacer.on_throttle(grant, throttle_delay(answer.headers, answer.body, now=self.wall()))
        controller = pacer.controller
        stats.current_rate = 0.0 if controller.rate == math.inf else controller.rate
        stats.current_window = controller.window
        return answer


class AuthorizedTransport:
    """Adds `Authorization: CwsAuth Bearer=<token>` to requests that go to the API."""

    def __init__(self, inner: Transport, tokens: TokenSource) -> None:
        self.inner = inner
        self.tokens = tokens

    async def send(self, request: Request) -> Answer:
        request.bearer = token = await self.tokens.token()
        request.headers["Authorization"] = auth_value(token)
        return await self.inner.send(request)
