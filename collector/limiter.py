"""The run-wide request rate: an even schedule, a pause after a 429, and an adaptive rate.

Every request of the run (token calls, discovery pages and retries included) passes
`AdaptiveRateLimiter.acquire()`. The limiter does no I/O and reads time only through an
injected `Clock`, so tests run it on fake time and never sleep.

Pacing is GCRA in its "virtual scheduling" form (the ATM Forum's Generic Cell Rate
Algorithm, https://en.wikipedia.org/wiki/Generic_cell_rate_algorithm; aiometer's rate meter
uses it too): a theoretical arrival time `tat` moves on by 1/rate at each grant, and a request
may start once `tat` is reached. There is no burst allowance, so the server sees an even
stream. Callers queue in ticket order and look again at least every MAX_NAP_S, so a rate that
rises while they wait applies at once, and only the head of the queue can go, so there is no
thundering herd. A 429 pauses everyone until `paused_until` (SPEC 5.3).

Why the rate adapts the way it does. Plain AIMD (halve at each 429, add back linearly)
averages about 75 % of the server's limit, and here every 429 also costs a run-wide pause,
so the shape is CUBIC's (RFC 9438) instead. The limiter remembers the rate at which the last
429 came (`estimate`, the server's limit as far as it knows), cuts to CUT (0.9) of it, climbs
back within RECOVERY_S to a plateau just under it (concave: fast first, flat near the
estimate), holds there, and only then probes above it, slowly at first and faster the longer
no 429 comes (convex), so that a limit that was underestimated or has grown is found again.
The probe takes PROBE_PER_PAUSE times the pause the server asked for: a 429 that costs a
four-second pause is worth risking four times less often than one that costs a second.

A token bucket's burst hides the limit for a while, so the rate at which a 429 comes is
often above the limit. The estimate therefore also learns from when the 429 came: one that
came soon after the pause, before the rate could have drained a burst, cuts it to SHORT_CUT;
one that came on the plateau, below the last estimate, moves the plateau under that rate.
With no configured ceiling (`rate = 0`) the run starts unlimited, and its first 429 says
nothing about the limit: the limiter then starts from the rate requests actually went out at
and doubles it every SLOW_START_S (TCP's slow start) until the next 429, then halves. A 429
for a request sent before the last cut says nothing about the new rate: it only extends the
pause.

Not every 429 is evidence of a limit: gateways also throttle a request here and there for
reasons of their own (Citrix documents no limit for /cvad/manage; the simulator's flaky and
hostile profiles answer 1 or 2 % of requests with 429 at random). Every 429 pauses the run,
as the spec asks, but cutting at each scattered one would ratchet the rate down 10 % at a time
until the run crawls (the simulation above fell to 10 requests a second). So a 429 cuts only
when it looks like a limit. While unlimited, that means dense 429s: at least DENSE_COUNT and
DENSE_SHARE of the answers of the last ANSWERS_WINDOW_S (a flood above a real limit gets
nothing but 429s once the burst is spent; before the first cut no 429 counts as stale).
Once paced, a limit shows as one 429 per episode, so density says nothing; instead a 429 at a
rate below NOISE of the most 2xx answers the server has given in one second (counted from the
first 429 on, so the initial burst does not count) is noise: the server has shown it takes
more than that.

The constants were chosen with a simulation (tests/test_limiter.py has one): against token
buckets of 0.1 to 5 seconds of burst and sliding or fixed one-second windows, and Retry-After
of about a second, runs of 20,000 requests settle at 90 to 100 % of the limit with at most
1 % of 429s, the start-up included; with 1 % of 429s at random and no limit, the run keeps
50 to 120 requests a second (each 429 still costs a one-second pause of the whole run).
"""

from __future__ import annotations

import math
import time
from collections import deque
from typing import Protocol

import anyio

DEFAULT_PAUSE_S = 1.0  # the pause after a 429 with neither Retry-After nor retryDelay
MIN_PAUSE_S = 0.25  # a shorter pause cannot let the server recover before the rate drops
MAX_PAUSE_S = 120.0  # a Retry-After of hours would stall the run for nothing
CUT = 0.9  # the rate right after a 429, as a share of the estimate
DEEP_CUT = 0.5  # ... when slow start ends: it may have overshot by a factor of two or more
SHORT_CUT = 0.9  # the estimate, as a share of the rate, after a 429 soon after the pause
QUICK_S = 3.0  # "soon after the pause"
FOUND = 0.98  # the estimate, as a share of the rate, when a probe above it met a 429
PLATEAU = 0.99  # where the recovery levels off, as a share of the estimate
RECOVERY_S = 1.0  # how long the climb from the cut back to the plateau takes
PROBE = 0.1  # the probe reaches estimate * (1 + PROBE) after probe_s, where
PROBE_PER_PAUSE = 45.0  # probe_s = PROBE_PER_PAUSE * pause, within these bounds:
PROBE_MIN_S, PROBE_MAX_S = 10.0, 600.0
SLOW_START_S = 0.5  # the doubling time of the rate before the first real estimate
WINDOW_S = 1.0  # how far back the rate requests go out at is measured
MIN_RATE = 0.5  # requests per second: the floor of every cut
EARLY = 0.5  # the head may go this share of an interval early, to absorb late wake-ups
MAX_NAP_S = 0.1  # a waiting caller looks again at least this often
DENSE_COUNT = 3  # 429s are evidence of a limit when at least this many ...
DENSE_SHARE = 0.02  # ... make at least this share of the recent answers
ANSWERS_WINDOW_S = 1.0  # "recent"
ANSWERS_KEPT = 400  # and at most this many answers back
NOISE = 0.6  # a 429 at under this share of the most 2xx answers seen in a second is noise


class Clock(Protocol):
    """**Protocol:** the time source of the limiter: a monotonic `now()` and a `sleep()`."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class MonotonicClock:
    """The real clock: `time.monotonic()` and `anyio.sleep()`."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


class AdaptiveRateLimiter:
    """Paces every request of a run at most `rate` requests per second (0: no ceiling).

    Usage::

        sent_at = await limiter.acquire()
        ... send the request ...
        limiter.on_success()                       # after a 2xx answer
        limiter.on_throttle(retry_after, sent_at)  # after a 429 answer

    `current_rate` is the rate allowed now (`math.inf` while unlimited), never above
    `ceiling`; `paused_until` the clock time before which no request starts; `estimate` the
    server's limit as the last 429 showed it (None before one).
    """

    __slots__ = (
        "_answers",
        "_base",
        "_clock",
        "_count",
        "_cut_at",
        "_gone",
        "_head",
        "_issued",
        "_peak",
        "_probe_s",
        "_rate",
        "_resumed_at",
        "_second",
        "_sent",
        "_slow_start",
        "_tat",
        "ceiling",
        "estimate",
        "max_pause",
        "paused_until",
    )

    def __init__(
        self, rate: float, clock: Clock | None = None, *, max_pause: float = MAX_PAUSE_S
    ) -> None:
        if not rate >= 0:  # also refuses NaN
            raise ValueError(f"rate must be 0 (no ceiling) or positive, got {rate}")
        self._clock = clock or MonotonicClock()
        self.ceiling = rate if rate > 0 else math.inf
        self.max_pause = max_pause
        self.estimate: float | None = None
        self.paused_until = -math.inf
        self._rate = self.ceiling
        self._base = self.ceiling  # the rate right after the last cut
        self._tat = -math.inf  # GCRA: the theoretical arrival time of the next request
        self._issued = 0  # tickets handed out, in order of arrival
        self._head = 0  # the oldest ticket still waiting: only it may go
        self._gone: set[int] = set()  # tickets after the head already granted or abandoned
        self._cut_at = -math.inf
        self._resumed_at = -math.inf  # the end of the pause that followed the last cut
        self._probe_s = PROBE_MIN_S
        self._slow_start = False
        self._sent: deque[float] = deque()  # grant times within the last window
        self._answers: deque[tuple[float, bool]] = deque(maxlen=ANSWERS_KEPT)  # (time, 429?)
        self._second = -math.inf  # the clock second being counted ...
        self._count = 0  # ... its 2xx answers so far, and
        self._peak = 0  # the most 2xx answers of one second, counted while the rate is finite

    @property
    def current_rate(self) -> float:
        return self._rate

    async def acquire(self) -> float:
        """Wait for the pause to end and for this caller's turn; return the time of the grant.

        Pass the returned time to `on_throttle`, so that a late 429 is known for what it is.
        A caller cancelled while waiting gives up its place.
        """
        clock = self._clock
        ticket = self._issued
        self._issued += 1
        try:
            while True:
                now = clock.now()
                if now < self.paused_until:
                    await clock.sleep(self.paused_until - now)
                    continue
                if self._rate == math.inf:
                    break
                interval = 1.0 / self._rate
                ahead = ticket - self._head
                ready = self._tat - EARLY * interval + ahead * interval
                if ahead == 0 and now >= ready:
                    break
                await clock.sleep(min(max(ready - now, interval / 4), MAX_NAP_S))
        finally:
            self._leave(ticket)
        self._tat = max(self._tat, now) + 1.0 / self._rate
        sent = self._sent
        sent.append(now)
        while sent[0] < now - WINDOW_S:
            sent.popleft()
        return now

    def on_success(self) -> None:
        """After a 2xx answer: let the rate climb back along its curve after a cut."""
        now = self._clock.now()
        self._answers.append((now, False))
        if self._second > -math.inf:  # counted from the first 429 on (see NOISE)
            second = math.floor(now)
            if second != self._second:
                self._peak = max(self._peak, self._count)
                self._second, self._count = second, 0
            self._count += 1
        if self.estimate is not None or self._slow_start:
            self._rate = min(self.ceiling, self._target(now))

    def on_throttle(self, retry_after: float | None = None, sent_at: float | None = None) -> None:
        """After a 429: pause every caller, and cut the rate unless the request predates the cut.

        `retry_after` is the server's wait in seconds (DEFAULT_PAUSE_S when None; kept
        within MIN_PAUSE_S and `max_pause`); `sent_at` is what `acquire` returned for the
        throttled request (None: count it as new).
        """
        now = self._clock.now()
        pause = DEFAULT_PAUSE_S if retry_after is None else retry_after
        pause = min(max(pause, MIN_PAUSE_S), self.max_pause)
        self.paused_until = max(self.paused_until, now + pause)
        self._tat = max(self._tat, self.paused_until)
        if sent_at is not None and sent_at < self._cut_at:
            return  # sent before the last cut: that cut already answered it
        self._answers.append((now, True))
        if self._second == -math.inf:
            self._second = math.floor(now)
        since = now - self._resumed_at
        if self._rate == math.inf:
            if not self._dense(now):
                return  # scattered 429s while unlimited: the pause is answer enough
            self._slow_start = True  # dense 429s end an unlimited run's free rein
            rate = self._sent_rate(now)
        elif self._rate < NOISE * max(self._peak, self._count):
            return  # far below what the server has taken in one second: not a limit
        else:
            rate = self._rate
            if self._slow_start:
                share = DEEP_CUT / CUT
            elif self.estimate is not None and rate > self.estimate and since >= RECOVERY_S:
                share = FOUND
            elif since < QUICK_S or self.estimate is None:
                share = SHORT_CUT
            else:
                share = PLATEAU
            self._slow_start = False
            self.estimate = max(rate * share, MIN_RATE)
            rate = self.estimate * CUT
        self._rate = self._base = min(self.ceiling, max(MIN_RATE, rate))
        self._cut_at = now
        self._resumed_at = self.paused_until
        self._probe_s = min(PROBE_MAX_S, max(PROBE_MIN_S, PROBE_PER_PAUSE * pause))

    def _leave(self, ticket: int) -> None:
        """A ticket was granted or abandoned: the next one still waiting becomes the head."""
        if ticket != self._head:
            self._gone.add(ticket)
            return
        self._head += 1
        while self._head in self._gone:
            self._gone.remove(self._head)
            self._head += 1

    def _dense(self, now: float) -> bool:
        """Whether the recent 429s are dense enough to say the rate is above a limit."""
        recent = [throttled for at, throttled in self._answers if at >= now - ANSWERS_WINDOW_S]
        count = sum(recent)
        return count >= DENSE_COUNT and count >= DENSE_SHARE * len(recent)

    def _sent_rate(self, now: float) -> float:
        """Requests granted per second over the last window."""
        sent = self._sent
        while sent and sent[0] < now - WINDOW_S:
            sent.popleft()
        return len(sent) / WINDOW_S

    def _target(self, now: float) -> float:
        """The rate allowed `now`, on the curve that started at the last cut."""
        since = now - self._resumed_at
        if since < 0:
            return self._rate
        # Growth beyond what is used would only store up a burst: at most twice the sent rate.
        used = max(self._base, 2.0 * self._sent_rate(now))
        if self._slow_start:
            return min(used, self._base * math.pow(2.0, since / SLOW_START_S))
        assert self.estimate is not None
        if since < RECOVERY_S:
            left = 1.0 - since / RECOVERY_S
            return self.estimate * (PLATEAU - (PLATEAU - CUT) * left * left * left)
        probed = (since - RECOVERY_S) / self._probe_s
        return min(
            max(used, self.estimate * PLATEAU),
            self.estimate * (PLATEAU + (1.0 + PROBE - PLATEAU) * probed * probed * probed),
        )
