"""The adaptive rate limiter, on virtual time: nothing here sleeps for real.

`VirtualTime` is a tiny event loop of its own (aiolimiter's MockLoopTime idea, taken one step
further): the limiter's `clock.sleep` yields the time it wants to wake at, and `run()` resumes
coroutines in time order, moving the clock by hand. A simulated run of 20,000 requests takes a
fraction of a second of real time.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Coroutine, Generator
from dataclasses import dataclass, field
from typing import Any

import pytest

from collector.errors import ApiError
from collector.limiter import (
    CUT,
    DEFAULT_PAUSE_S,
    MIN_PAUSE_S,
    PLATEAU,
    RECOVERY_S,
    AdaptiveRateLimiter,
)
from collector.models import ErrorKind

Task = Coroutine[Any, Any, None]


class Cancelled(Exception):
    """Thrown into a coroutine to cancel it."""


@dataclass(frozen=True)
class Wake:
    at: float

    def __await__(self) -> Generator[Wake, None, None]:
        yield self


@dataclass
class VirtualTime:
    """A clock for the limiter and the loop that drives coroutines on it."""

    t: float = 0.0
    queue: list[tuple[float, int, Task, BaseException | None]] = field(default_factory=list)
    seq: itertools.count[int] = field(default_factory=itertools.count)
    done: set[Task] = field(default_factory=set)

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        await Wake(self.t + max(seconds, 0.0))

    def spawn(self, coro: Task, at: float = 0.0) -> None:
        heapq.heappush(self.queue, (at, next(self.seq), coro, None))

    def cancel(self, coro: Task, at: float) -> None:
        heapq.heappush(self.queue, (at, next(self.seq), coro, Cancelled()))

    def run(self) -> None:
        while self.queue:
            at, _, coro, exc = heapq.heappop(self.queue)
            if coro in self.done:
                continue
            self.t = max(self.t, at)
            try:
                wake = coro.throw(exc) if exc else coro.send(None)
            except (StopIteration, Cancelled):
                self.done.add(coro)
                continue
            assert isinstance(wake, Wake)
            heapq.heappush(self.queue, (wake.at, next(self.seq), coro, None))


def grants_of(limiter: AdaptiveRateLimiter, clock: VirtualTime, count: int) -> list[float]:
    """Start `count` callers at time 0 and return the times they were let through."""
    times: list[float] = []

    async def caller() -> None:
        times.append(await limiter.acquire())

    for _ in range(count):
        clock.spawn(caller())
    clock.run()
    return times


class TestPacing:
    def test_unlimited_never_waits(self) -> None:
        """With no ceiling and no 429, every caller goes at once."""

        clock = VirtualTime()
        limiter = AdaptiveRateLimiter(0, clock)
        assert grants_of(limiter, clock, 100) == [0.0] * 100
        assert limiter.current_rate == math.inf

    def test_even_spacing(self) -> None:
        """Callers go one interval apart (GCRA), the head up to half an interval early."""

        clock = VirtualTime()
        times = grants_of(AdaptiveRateLimiter(10, clock), clock, 11)
        assert times[0] == 0.0
        assert times[1:] == pytest.approx([k * 0.1 - 0.05 for k in range(1, 11)])

    def test_no_burst_after_idle(self) -> None:
        """Time spent idle earns no burst: the schedule starts again from now."""

        clock = VirtualTime()
        limiter = AdaptiveRateLimiter(10, clock)
        grants_of(limiter, clock, 3)
        clock.t = 100.0
        times = grants_of(limiter, clock, 3)
        assert times == pytest.approx([100.0, 100.05, 100.15])

    def test_cancelled_caller_gives_up_its_place(self) -> None:
        """A caller cancelled while waiting does not block the ones behind it."""

        clock = VirtualTime()
        limiter = AdaptiveRateLimiter(1, clock)
        times: list[float] = []

        async def caller() -> None:
            times.append(await limiter.acquire())

        first, second, third = caller(), caller(), caller()
        for coro in (first, second, third):
            clock.spawn(coro)
        clock.cancel(second, at=0.2)
        clock.run()
        assert times == pytest.approx([0.0, 0.5])


class TestThrottle:
    def test_pause_holds_every_caller(self) -> None:
        """After a 429 nobody goes before the pause ends, waiting callers included."""

        clock = VirtualTime()
        limiter = AdaptiveRateLimiter(10, clock)
        times: list[float] = []

        async def caller() -> None:
            times.append(await limiter.acquire())

        async def throttle() -> None:
            await clock.sleep(0.12)
            limiter.on_throttle(2.0)

        for _ in range(6):
            clock.spawn(caller())
        clock.spawn(throttle())
        clock.run()
        before = [t for t in times if t < 0.12]
        after = [t for t in times if t >= 0.12]
        assert len(before) == 2
        assert len(after) == 4
        assert min(after) >= 2.12

    def test_pause_holds_unlimited_callers(self) -> None:
        """The pause holds callers of an unlimited limiter too."""

        clock = VirtualTime()
        limiter = AdaptiveRateLimiter(0, clock)
        limiter.on_throttle(3.0)
        assert min(grants_of(limiter, clock, 20)) >= 3.0

    @pytest.mark.parametrize(
        ("retry_after", "pause"),
        [
            pytest.param(None, DEFAULT_PAUSE_S, id="default"),
            pytest.param(0.0, MIN_PAUSE_S, id="floor"),
            pytest.param(4.0, 4.0, id="as-asked"),
            pytest.param(1e9, 30.0, id="capped"),
        ],
    )
    def test_pause_length(self, retry_after: float | None, pause: float) -> None:
        """The pause is the server's wait, a default without one, within bounds."""

        clock = VirtualTime(t=10.0)
        limiter = AdaptiveRateLimiter(5, clock, max_pause=30.0)
        limiter.on_throttle(retry_after)
        assert limiter.paused_until == 10.0 + pause

    def test_cut(self) -> None:
        """A 429 cuts the rate below the rate it came at."""

        clock = VirtualTime()
        limiter = AdaptiveRateLimiter(100, clock)
        limiter.on_throttle(1.0)
        assert limiter.estimate == pytest.approx(90.0)
        assert limiter.current_rate == pytest.approx(90.0 * CUT)

    def test_stale_429_does_not_cut_again(self) -> None:
        """A 429 for a request sent before the last cut only extends the pause."""

        clock = VirtualTime()
        limiter = AdaptiveRateLimiter(100, clock)
        limiter.on_throttle(1.0, sent_at=-0.1)
        rate = limiter.current_rate
        clock.t = 0.5
        limiter.on_throttle(1.0, sent_at=-0.05)
        assert limiter.current_rate == rate
        assert limiter.paused_until == 1.5

    def test_recovers_to_the_ceiling_never_above(self) -> None:
        """After a cut the rate climbs back to the plateau, then to the ceiling, never above."""

        clock = VirtualTime()
        limiter = AdaptiveRateLimiter(100, clock)
        rates: list[tuple[float, float]] = []
        grants: list[float] = []

        async def worker() -> None:
            while clock.now() < 120.0:
                grants.append(await limiter.acquire())
                limiter.on_success()
                rates.append((clock.now(), limiter.current_rate))
                await clock.sleep(0.05)

        async def throttle() -> None:
            await clock.sleep(1.0)
            limiter.on_throttle(1.0)

        for _ in range(20):
            clock.spawn(worker())
        clock.spawn(throttle())
        clock.run()
        assert max(rate for _, rate in rates) <= 100.0
        after_recovery = [r for t, r in rates if 2.0 + RECOVERY_S <= t <= 5.0]
        assert min(after_recovery) >= PLATEAU * limiter.estimate - 1e-9  # type: ignore[operator]
        assert rates[-1][1] == 100.0
        for start in range(119):
            assert sum(start <= t < start + 1 for t in grants) <= 101

    def test_slow_start_from_unlimited(self) -> None:
        """Dense 429s end an unlimited run's free rein: it restarts from the rate it sent at."""

        clock = VirtualTime()
        limiter = AdaptiveRateLimiter(0, clock)
        for _ in range(40):
            clock.spawn(limiter.acquire())  # type: ignore[arg-type]
        clock.run()
        for _ in range(3):
            limiter.on_throttle(1.0)
        assert limiter.current_rate == 40.0
        assert limiter.estimate is None

    def test_scattered_429s_pause_but_do_not_cut(self) -> None:
        """A 429 among many successes pauses everyone but leaves the rate alone."""

        clock = VirtualTime()
        limiter = AdaptiveRateLimiter(0, clock)
        for _ in range(200):
            limiter.on_success()
        limiter.on_throttle(1.0)
        assert limiter.current_rate == math.inf
        assert limiter.paused_until == clock.now() + 1.0

    def test_429_far_below_what_the_server_took_is_noise(self) -> None:
        """Once paced, a 429 at a rate well under the most the server took in a second only
        pauses."""

        clock = VirtualTime()
        limiter = AdaptiveRateLimiter(100, clock)
        limiter.on_throttle(1.0)  # a first cut; the server's answers are counted from here
        clock.t = 2.0
        for _ in range(150):
            limiter.on_success()
        clock.t = 3.5
        limiter.on_success()
        rate, estimate = limiter.current_rate, limiter.estimate
        assert rate < 0.6 * 150
        limiter.on_throttle(1.0, sent_at=3.5)
        assert (limiter.current_rate, limiter.estimate) == (rate, estimate)
        assert limiter.paused_until == 4.5


# --- the design check: a simulated server that allows R requests a second --------------------


@dataclass
class TokenBucket:
    """A server admitting `rate` requests a second with a burst of `burst`; 429 above it."""

    rate: float
    burst: float
    header: bool = True  # Retry-After in whole seconds; else no wait announced at all
    tokens: float = -1.0
    last: float = 0.0

    def admit(self, t: float) -> float | None:
        """None if admitted, else the wait the 429 announces (None when it announces none)."""
        if self.tokens < 0:
            self.tokens = self.burst
        self.tokens = min(self.burst, self.tokens + (t - self.last) * self.rate)
        self.last = t
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return None
        return math.ceil((1.0 - self.tokens) / self.rate) if self.header else -1.0


@dataclass
class SlidingWindow:
    """A server admitting at most `rate` requests in any one-second window."""

    rate: float
    times: list[float] = field(default_factory=list)

    def admit(self, t: float) -> float | None:
        self.times = [s for s in self.times if s > t - 1.0]
        if len(self.times) < self.rate:
            self.times.append(t)
            return None
        return math.ceil(self.times[0] + 1.0 - t)


@dataclass
class RandomThrottle:
    """A server with no limit that answers a share of requests with 429 at random anyway."""

    share: float
    rng: random.Random = field(default_factory=lambda: random.Random(3))

    def admit(self, t: float) -> float | None:
        return 1.0 if self.rng.random() < self.share else None


@dataclass
class Outcome:
    seconds: float = 0.0
    requests: int = 0
    throttled: int = 0
    collected: int = 0


def simulate(
    server: TokenBucket | SlidingWindow | RandomThrottle,
    *,
    rate: float = 0.0,
    machines: int = 20_000,
    workers: int = 32,
    latency: float = 0.02,
    seed: int = 7,
) -> Outcome:
    """Collect `machines` with `workers`, each request paced, sent, answered after `latency`."""
    clock = VirtualTime()
    limiter = AdaptiveRateLimiter(rate, clock)
    rng = random.Random(seed)
    outcome = Outcome()
    left = [machines]

    async def request() -> None:
        sent_at = await limiter.acquire()
        outcome.requests += 1
        wait = server.admit(clock.now())
        await clock.sleep(latency * (0.5 + rng.random()))
        if wait is None:
            limiter.on_success()
            return
        outcome.throttled += 1
        retry_after = None if wait < 0 else float(wait)
        limiter.on_throttle(retry_after, sent_at)
        raise ApiError("429", kind=ErrorKind.THROTTLED, retryable=True, retry_after=retry_after)

    async def worker() -> None:
        while left[0] > 0:
            left[0] -= 1
            for attempt in range(1, 7):  # the client's policy: full jitter, Retry-After floor
                try:
                    await request()
                except ApiError as exc:
                    backoff = rng.random() * min(120.0, 0.5 * 2.0 ** (attempt - 1))
                    await clock.sleep(max(backoff, exc.retry_after or 0.0))
                    continue
                outcome.collected += 1
                break

    for _ in range(workers):
        clock.spawn(worker())
    clock.run()
    outcome.seconds = clock.now()
    return outcome


@pytest.mark.parametrize(
    ("server", "workers", "latency"),
    [
        pytest.param(TokenBucket(200, 200), 32, 0.02, id="bucket-1s-burst"),
        pytest.param(TokenBucket(200, 20), 32, 0.02, id="bucket-small-burst"),
        pytest.param(TokenBucket(200, 200, header=False), 64, 0.1, id="no-retry-after"),
        pytest.param(SlidingWindow(200), 32, 0.02, id="sliding-window"),
    ],
)
def test_settles_near_the_server_limit(
    server: TokenBucket | SlidingWindow, workers: int, latency: float
) -> None:
    """With rate = 0, a run against a server of 200 req/s gets >= 90 % of it, < 2 % 429s."""

    outcome = simulate(server, workers=workers, latency=latency)
    assert outcome.collected == 20_000
    throughput = outcome.collected / outcome.seconds
    assert throughput >= 0.9 * 200, throughput
    assert outcome.throttled / outcome.requests < 0.02


def test_ceiling_below_the_server_limit() -> None:
    """A configured rate under the server's limit is used in full and never passed: no 429."""

    outcome = simulate(TokenBucket(200, 200), rate=150, machines=6000)
    assert outcome.throttled == 0
    assert 6000 / outcome.seconds == pytest.approx(150, rel=0.01)


def test_random_429s_do_not_ratchet_the_rate_down() -> None:
    """Against 1 % of 429s at random and no limit, only the pauses slow the run.

    Each 429 pauses the run for its Retry-After of 1 s, so 1 % of 429s bound any client that
    honours them near 1 / (0.01 * 1 s) = 100 requests/s; a limiter that took each one for a
    limit would ratchet far below that.
    """

    outcome = simulate(RandomThrottle(0.01), machines=5_000)
    assert outcome.collected == 5_000
    assert outcome.collected / outcome.seconds >= 0.8 * 100
