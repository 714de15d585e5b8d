"""The one fake clock of the tests, and a recording transport for the seams of the request path.

`FakeClock` is virtual time: `sleep()` parks the caller until the clock reaches its wake-up
time, and `run()` moves the clock straight to the next wake-up whenever every task is blocked
(aiolimiter's MockLoopTime idea, carried to many tasks). Nothing sleeps for real. It is also
a `Callable[[], float]` for the token providers and gives `wall()` for Retry-After dates.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import anyio
import anyio.lowlevel
import orjson

from collector.protocol import Answer
from collector.transport import Request

T = TypeVar("T")
EPOCH = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)


class FakeClock:
    """Monotonic virtual time starting at `start`, with the wall clock at `EPOCH + t`."""

    def __init__(self, start: float = 0.0) -> None:
        self.t = start
        self._sleepers: list[tuple[float, int, anyio.Event]] = []
        self._order = itertools.count()

    def __call__(self) -> float:
        return self.t

    def now(self) -> float:
        return self.t

    def wall(self) -> datetime:
        return EPOCH + timedelta(seconds=self.t)

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await anyio.lowlevel.checkpoint()
            return
        event = anyio.Event()
        heapq.heappush(self._sleepers, (self.t + seconds, next(self._order), event))
        await event.wait()

    def advance(self, seconds: float) -> None:
        """Move time on by `seconds`, waking every sleeper that is due."""
        self._wake_until(self.t + seconds)

    def _wake_until(self, until: float) -> None:
        while self._sleepers and self._sleepers[0][0] <= until:
            wake_at, _, event = heapq.heappop(self._sleepers)
            self.t = max(self.t, wake_at)
            event.set()
        self.t = max(self.t, until)

    async def run(self, main: Callable[[], Awaitable[T]], *, limit: float = 3600.0) -> T:
        """Run `main()` to its end on virtual time (at most `limit` virtual seconds)."""
        result: list[T] = []

        async def target() -> None:
            result.append(await main())
            group.cancel_scope.cancel()

        with anyio.fail_after(10):
            async with anyio.create_task_group() as group:
                group.start_soon(target)
                while True:
                    await anyio.wait_all_tasks_blocked()
                    if not self._sleepers:
                        await anyio.lowlevel.checkpoint()  # blocked on something else: let it move
                        continue
                    wake_at = self._sleepers[0][0]
                    if wake_at > limit:
                        raise AssertionError(f"virtual time ran past {limit} s")
                    self._wake_until(wake_at)
        return result[0]


def answer(status: int, body: Any = b"", headers: dict[str, str] | None = None) -> Answer:
    """An answer with a JSON body (or raw bytes)."""
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return Answer(status, headers or {}, raw)


class RecordingTransport:
    """A transport answering from `handler`, recording each request and the peak in flight."""

    def __init__(self, handler: Callable[[Request], Awaitable[Answer]]) -> None:
        self.handler = handler
        self.sent: list[Request] = []
        self.in_flight = 0
        self.peak = 0

    async def send(self, request: Request) -> Answer:
        self.sent.append(request)
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            return await self.handler(request)
        finally:
            self.in_flight -= 1
