"""The decisions of pacing: the request rate and the in-flight window, from answers and time.

Pure: plain numbers in, plain numbers out, no clock read, no awaits. The pacer reports each
grant (`on_sent`) and each answer (`on_success`, `on_throttle`) with the time and with how many
requests were in flight when that request was sent; it reads back `rate`, `window` and
`paused_until`.

Two controls run at once, as Netflix's concurrency-limits and Envoy's adaptive concurrency
filter put a window on calls in flight, and TCP keeps a congestion window beside its pacing
rate. Each 429 that points to a limit is charged to the one it points to: a server that
limits calls in flight refuses the requests sent with many in flight far more often than
those sent with few; a server that limits the rate refuses alike whatever was in flight.
"In flight" is counted from the grant to the answer, never while waiting for a slot.
"""

from __future__ import annotations

import enum
import math
from collections import deque

from collector.pacing.tuning import TUNING, Tuning


class Verdict(enum.Enum):
    """What one 429 was taken for."""

    WINDOW = "window"  # a limit on calls in flight: the window was cut, the run pauses
    RATE = "rate"  # a rate limit: the rate was cut, the run pauses
    STALE = "stale"  # sent before the last cut, which already answered it: the pause extends
    NOISE = "noise"  # no sign of a limit: only this request waits


class Controller:
    """The rate (`math.inf`: no limit) and the window (1 to `max_window`) of a run."""

    __slots__ = (
        "_answers",
        "_base",
        "_count",
        "_cut_at",
        "_ok_flights",
        "_ok_since_cut",
        "_peak",
        "_probe_s",
        "_rate",
        "_refused_low",
        "_resumed_at",
        "_second",
        "_sent",
        "_slow_start",
        "_window_base",
        "_window_cut_at",
        "_window_probe_s",
        "_window_slow_start",
        "ceiling",
        "estimate",
        "max_pause",
        "max_window",
        "paused_until",
        "tuning",
        "window",
    )

    def __init__(
        self,
        rate: float,
        max_window: int,
        *,
        tuning: Tuning = TUNING,
        max_pause: float | None = None,
    ) -> None:
        if not rate >= 0:  # also refuses NaN
            raise ValueError(f"rate must be 0 (no ceiling) or positive, got {rate}")
        if max_window < 1:
            raise ValueError(f"the window needs at least one call in flight, got {max_window}")
        self.tuning = tuning
        self.ceiling = rate if rate > 0 else math.inf
        self.max_pause = tuning.max_pause_s if max_pause is None else max_pause
        self.max_window = max_window
        # TCP's slow start (RFC 5681, with RFC 6928's initial window): a first flood of the
        # whole window would draw one 429 a request above a limit on calls in flight, a few
        # percent of a short run; doubling a round trip finds the limit with a few.
        self.window = min(max_window, tuning.initial_window)
        self._window_slow_start = True
        self.estimate: float | None = None  # the server's rate limit, as the last cut saw it
        self.paused_until = -math.inf
        self._rate = self.ceiling
        self._base = self.ceiling  # the rate right after the last cut
        self._cut_at = -math.inf  # the last rate cut
        self._ok_since_cut = 0  # 2xx answers since then
        self._resumed_at = -math.inf  # the end of the pause that followed it
        self._probe_s = tuning.probe_min_s
        self._slow_start = False
        self._sent: deque[float] = deque()  # grant times within the last sent_window_s
        # (when, refused, in flight at its send) of the latest answers
        self._answers: deque[tuple[float, bool, int]] = deque(maxlen=tuning.answers_kept)
        self._second = -math.inf  # the clock second being counted ...
        self._count = 0  # ... its 2xx answers so far, and
        self._peak = 0  # the most 2xx answers of one second, counted from the first 429 on
        # How many were in flight with each of the latest successes: a limit on calls in flight
        # refuses only requests sent with more than it allows, a rate limit refuses any.
        self._ok_flights: deque[int] = deque(maxlen=tuning.ok_flights_kept)
        self._window_base = self.window  # the window right after its last cut
        self._window_cut_at = -math.inf
        self._refused_low = max_window + 1  # the fewest in flight refused since that cut
        self._window_probe_s = tuning.probe_min_s

    @property
    def rate(self) -> float:
        return self._rate

    # --- reports ---------------------------------------------------------------------------

    def on_sent(self, now: float) -> None:
        """A request was granted at `now`."""
        sent = self._sent
        sent.append(now)
        horizon = now - self.tuning.sent_window_s
        while sent[0] < horizon:
            sent.popleft()

    def on_success(self, now: float, in_flight: int = 0) -> None:
        """A 2xx answer to a request sent with `in_flight` requests in flight (itself included)."""
        self._answers.append((now, False, in_flight))
        self._ok_since_cut += 1
        if self._second > -math.inf:
            second = math.floor(now)
            if second != self._second:
                self._peak = max(self._peak, self._count)
                self._second, self._count = second, 0
            self._count += 1
        if in_flight:
            self._ok_flights.append(in_flight)
        if self.estimate is not None or self._slow_start:
            self._rate = min(self.ceiling, self._rate_target(now))
        if (
            self.window < in_flight < self._refused_low
            and now - self._window_cut_at <= self.tuning.answers_window_s
        ):
            # Sent before the window's cut, with fewer in flight than any refused since: the
            # answers of one flood come back in any order, and this one says more worked.
            self.window = self._window_base = in_flight
        elif self._window_slow_start:
            if self.window >= self.max_window:
                self._window_slow_start = False
            elif 2 * in_flight >= self.window:  # one more a success: doubles a round trip
                self.window += 1
                self._window_base = self.window
        elif in_flight >= self.window and self.window < self.max_window:
            # Grown only while it is full (TCP's cwnd validation, RFC 7661): a window that grew
            # unused would let a flood through the day the rate stops holding the run back.
            self.window = self._window_target(now)

    def on_throttle(
        self,
        now: float,
        *,
        sent_at: float,
        in_flight: int = 0,
        retry_after: float | None = None,
    ) -> Verdict:
        """A 429 to a request sent at `sent_at` with `in_flight` in flight (itself included).

        `retry_after` is the server's wait in seconds (None: `default_pause_s`). The verdict
        says what it was taken for; only `NOISE` leaves the run unpaused.
        """
        t = self.tuning
        pause = t.default_pause_s if retry_after is None else retry_after
        pause = min(max(pause, t.min_pause_s), self.max_pause)
        self._answers.append((now, True, in_flight))
        if self._second == -math.inf:
            self._second = math.floor(now)  # count the server's 2xx from here (see `noise`)
        if (
            sent_at < self._window_cut_at
            and in_flight > 1
            and 0 < self._ok_flight_high() < in_flight
        ):
            # Refused with more in flight than nearly all successes, in the flood the cut
            # answered: the limit is below this count (see the branches below).
            self._refused_low = min(self._refused_low, in_flight)
            self.window = self._window_base = min(self.window, max(1, in_flight - 1))
        if sent_at < max(self._cut_at, self._window_cut_at):
            # Sent before the last cut: the cut already answered what this one says, and a
            # flood of 429s from one burst must not cut once per answer.
            self._pause(now, pause)
            return Verdict.STALE
        lately = self._ok_flight_high()
        # The server's count of calls in flight is never above ours (ours runs from the grant
        # until the answer is read), so below its limit no request is refused for being in
        # flight; above it some still pass, as ours counts answers on their way back.
        if in_flight > 1 and (
            self._steep(now, in_flight, in_flight) or self._steep(now, in_flight, lately + 1)
        ):
            # Refused far more often with this many in flight or more than with fewer: the
            # server counts calls in flight (Citrix Monitor allows one per tenant); a rate
            # limit or noise refuses alike at every count. Go back to the most that worked
            # below it, as Vegas and Envoy's gradient settle on the concurrency that kept
            # answers good, rather than halving as AIMD would: that count is known, and every
            # extra try costs a run-wide pause.
            worked = max((f for f in self._ok_flights if f < in_flight), default=in_flight - 1)
            self._refused_low = in_flight
            return self._cut_window(now, pause, worked)
        if in_flight > 1 and in_flight > min(self._window_base, lately):
            # Sent with more in flight than nearly all the latest successes (or above the
            # window that held): too few yet to tell a limit on calls in flight from noise,
            # but never charged to the rate, which such a limit would drag down for nothing.
            return Verdict.NOISE
        if (
            self._rate == math.inf
            and self.window < self.max_window
            and in_flight >= self.window
            and self._sent_rate(now) <= t.window_rate_margin * max(self._peak, self._count)
            and self._dense(now)
        ):
            # Dense 429s with the window full, no rate limit known, a limit on calls in flight
            # found before, and no faster than the server has already answered 2xx in one
            # second: a rate limit would have refused those rates too, so the limit on calls
            # in flight has fallen. Cut multiplicatively (AIMD, CUBIC's beta), the count that
            # worked being unknown now, and leave the rate alone.
            return self._cut_window(now, pause, math.floor(self.window * t.window_cut))
        if self._rate == math.inf:
            if not self._dense(now):
                # Scattered 429s with no ceiling and nothing in flight to blame: a gateway's
                # noise. Slowing the run for them would cap it near 1 / (share * pause).
                return Verdict.NOISE
            self._slow_start = True  # dense 429s end an unlimited run's free rein
            rate = self._sent_rate(now)
        elif self._rate < t.noise * max(self._peak, self._count) and not self._dense(now):
            # Far below what the server has taken in one second, and rare: noise. Dense 429s
            # are a limit even there: one that has fallen below what the server once took.
            return Verdict.NOISE
        else:
            rate = self._rate_cut(now)
        self._pause(now, pause)
        self._rate = self._base = min(self.ceiling, max(t.min_rate, rate))
        self._cut_at = now
        self._ok_since_cut = 0
        self._resumed_at = self.paused_until
        self._probe_s = self._probe_for(pause)
        return Verdict.RATE

    # --- the rate --------------------------------------------------------------------------

    def _rate_cut(self, now: float) -> float:
        """The rate after a 429 that points to a rate limit; sets the new estimate."""
        t = self.tuning
        rate, since = self._rate, now - self._resumed_at
        if self._slow_start:
            share = t.deep_cut / t.cut  # slow start doubles: it may be twice over the limit
        elif self.estimate is not None and rate > self.estimate and since >= t.recovery_s:
            share = t.found  # a probe above the estimate met the limit just above it
        elif since < t.quick_s or self.estimate is None:
            # Soon after a pause the rate could not yet have drained a token bucket's burst:
            # the limit is lower than the rate the burst let through.
            share = t.cut
        else:
            share = t.plateau  # on the plateau, below the estimate: the limit moved under it
        self._slow_start = False
        estimate = rate * share
        elapsed = now - self._cut_at
        if elapsed >= t.measured_min_s:
            # Over a whole cycle, from the last cut (its pause included) to this one, a token
            # bucket lets through exactly its rate: its burst refilled during the pause. Take
            # that when it is lower, within reason: a run held back by something else (its
            # tail, its window) answers fewer than the limit would allow.
            measured = self._ok_since_cut / elapsed
            estimate = max(min(estimate, measured), estimate * t.deep_cut)
        self.estimate = max(estimate, t.min_rate)
        return self.estimate * t.cut

    def _rate_target(self, now: float) -> float:
        """The rate allowed `now` on the curve that started at the last cut (CUBIC's shape)."""
        t = self.tuning
        since = now - self._resumed_at
        if since < 0:
            return self._rate
        # Growth beyond what is used would only store up a burst: at most twice the sent rate.
        used = max(self._base, 2.0 * self._sent_rate(now))
        if self._slow_start:
            return min(used, self._base * math.pow(2.0, since / t.slow_start_s))
        assert self.estimate is not None
        if since < t.recovery_s:
            left = 1.0 - since / t.recovery_s  # concave: fast first, flat near the estimate
            return self.estimate * (t.plateau - (t.plateau - t.cut) * left * left * left)
        probed = (since - t.recovery_s) / self._probe_s  # convex: slow first, then faster
        return min(
            max(used, self.estimate * t.plateau),
            self.estimate * (t.plateau + (1.0 + t.probe - t.plateau) * probed * probed * probed),
        )

    # --- the window ------------------------------------------------------------------------

    def _ok_flight_high(self) -> int:
        """The count in flight that all but `ok_flight_share` of the latest successes kept to."""
        flights = sorted(self._ok_flights)
        if not flights:
            return 0
        return flights[min(len(flights) - 1, int(self.tuning.ok_flight_share * len(flights)))]

    def _cut_window(self, now: float, pause: float, window: int) -> Verdict:
        self.window = self._window_base = max(1, min(self.window, window))
        self._window_slow_start = False
        if self.estimate is not None or self._slow_start:
            # The rate was cut for 429s that the window now explains (Little's law: a lower
            # rate also brings fewer calls in flight): free it, or it would hold the run below
            # what the window allows. A rate limit there as well cuts it again, from the top.
            self.estimate, self._slow_start = None, False
            self._rate = self._base = self.ceiling
        self._window_cut_at = now
        self._window_probe_s = self._probe_for(pause)
        self._pause(now, pause)
        return Verdict.WINDOW

    def _window_target(self, now: float) -> int:
        """The window allowed `now`: the count that worked, then a convex probe above it."""
        t = self.tuning
        since = now - max(self._window_cut_at, self.paused_until)
        if since < self._window_probe_s:
            return self._window_base
        probed = (since / self._window_probe_s) ** 3
        extra = max(1.0, self._window_base * t.window_probe_growth) * probed
        return min(self.max_window, self._window_base + int(extra))

    # --- shared ----------------------------------------------------------------------------

    def _pause(self, now: float, pause: float) -> None:
        self.paused_until = max(self.paused_until, now + pause)

    def _probe_for(self, pause: float) -> float:
        """How long before probing above a limit: longer when its 429s cost longer pauses."""
        t = self.tuning
        return min(t.probe_max_s, max(t.probe_min_s, t.probe_per_pause * pause))

    def _dense(self, now: float) -> bool:
        """Whether the recent 429s are dense enough to say the rate is above a limit."""
        t = self.tuning
        horizon = now - t.answers_window_s
        recent = [throttled for at, throttled, _ in self._answers if at >= horizon]
        count = sum(recent)
        return count >= t.dense_count and count >= t.dense_share * len(recent)

    def _steep(self, now: float, in_flight: int, split: int) -> bool:
        """Whether requests sent with `split` or more in flight (this 429's `in_flight` among
        them) were lately refused far more often than those sent with fewer."""
        t = self.tuning
        if split > in_flight or split < 2:
            return False
        # Only answers of the same few seconds compare: a window held full sends every request
        # with one count in flight, and fewer were last seen in another state of the run.
        horizon = now - t.steep_window_s
        hi_refused = hi = lo_refused = lo = 0
        for at, refused, flight in reversed(self._answers):
            if at < horizon:
                break
            if flight >= split:
                hi += 1
                hi_refused += refused
            elif flight:
                lo += 1
                lo_refused += refused
        if not lo:
            return False  # nothing sent with fewer in flight to compare with
        hi_share, lo_share = hi_refused / hi, lo_refused / lo
        return (
            hi_refused >= t.window_refused_count
            and hi_share >= t.window_refused_share
            and hi_share >= t.window_steepness * lo_share
        )

    def _sent_rate(self, now: float) -> float:
        """Requests granted per second over the last `sent_window_s`."""
        sent = self._sent
        horizon = now - self.tuning.sent_window_s
        while sent and sent[0] < horizon:
            sent.popleft()
        return len(sent) / self.tuning.sent_window_s
