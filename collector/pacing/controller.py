"""The decisions of pacing: the request rate and the in-flight window, from answers and time.

Pure: plain numbers in, plain numbers out, no clock read, no awaits. The pacer reports each
grant (`on_sent`) and each answer (`on_success`, `on_throttle`) with the time and with how many
requests were in flight when that request was sent; it reads back `rate`, `window` and
`paused_until`.

Two controls run at once, as Netflix's concurrency-limits and Envoy's adaptive concurrency
filter put a window on calls in flight, and TCP keeps a congestion window beside its pacing
rate. Each 429 that points to a limit is charged to the one it points to; which one, the
evidence module says (`evidence.charge`). This module moves the rate (CUBIC's curve) and the
window (slow start, then a convex probe) and sets the pauses.
"""

from __future__ import annotations

import enum
import math

from collector.pacing.cycles import Cycles
from collector.pacing.evidence import Charge, Evidence, State, charge
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
        "_base",
        "_cut_at",
        "_cycles",
        "_evidence",
        "_guessed",
        "_held",
        "_held_at",
        "_ok_since_cut",
        "_probe_s",
        "_rate",
        "_resumed_at",
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
        self._ok_since_cut = 0  # 2xx answers since then, its pause left out
        self._resumed_at = -math.inf  # the end of the pause that followed it
        self._probe_s = tuning.probe_min_s
        self._guessed = False  # the last cut took the cycle's measured rate (see `_rate_cut`)
        self._slow_start = False  # the rate doubling from the first limit to its estimate
        self._evidence = Evidence(tuning)
        self._cycles = Cycles(tuning)
        self._window_base = self.window  # the window right after its last cut
        self._window_cut_at = -math.inf
        # The successes in flight at once with the request whose 429 cut the window (at
        # `_held_at`: its grant, its burst included): a count the server took together.
        self._held, self._held_at = 0, -math.inf
        self._window_probe_s = tuning.probe_min_s  # until a cut sets it (see `_probe_for`)

    @property
    def rate(self) -> float:
        return self._rate

    # --- reports ---------------------------------------------------------------------------

    def on_sent(self, now: float) -> None:
        """A request was granted at `now`."""
        self._evidence.sent(now)
        self._cycles.sent(now, self._rate)

    def on_success(self, now: float, in_flight: int = 0, sent_at: float | None = None) -> None:
        """A 2xx answer to a request sent at `sent_at` (None: unknown, then `now`) with
        `in_flight` requests in flight (itself included)."""
        self._evidence.success(now, in_flight, sent_at)
        self._cycles.answered(now, now if sent_at is None else sent_at, refused=False)
        if now >= self.paused_until:  # answered while paused: sent before the cut, not its cycle
            self._ok_since_cut += 1
        if self.estimate is not None or self._slow_start:
            self._rate = min(self.ceiling, self._rate_target(now))
        if (
            sent_at is not None
            and sent_at <= self._held_at < now
            and now - self._window_cut_at <= self.tuning.answers_window_s
        ):
            # In flight with the request whose 429 cut the window: the server took one more at
            # once than counted so far. Counted, not read from the counts in flight at their
            # grants: the requests of one burst reach the server in any order, so one sent with
            # 6 in flight may be refused and one sent with 9 taken.
            self._held += 1
            if self._held > self.window:
                self.window = self._window_base = min(self.max_window, self._held)
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
        evidence = self._evidence
        evidence.refused(now, in_flight)
        self._cycles.answered(now, sent_at, refused=True)
        if (
            sent_at < self._window_cut_at
            and in_flight > 1
            and 0 < evidence.ok_flight_high() < in_flight
        ):
            # Refused with more in flight than nearly all successes, in the flood the cut
            # answered: the limit is below this count (see `evidence.charge`), though not
            # below what the server was seen to take at once.
            below = max(1, in_flight - 1, self._held)
            self.window = self._window_base = min(self.window, below)
        if sent_at < max(self._cut_at, self._window_cut_at):
            # Sent before the last cut: the cut already answered what this one says, and a
            # flood of 429s from one burst must not cut once per answer.
            self._pause(now, pause)
            return Verdict.STALE
        noise = self._cycles.finding(now)
        if noise is not None:
            # The cuts so far lowered the rate but not the share of 429s: they were noise. Go
            # back to the rate before them, and take 429s for a limit only when denser than it.
            evidence.background = max(evidence.background, noise.share)
            evidence.forget()
            self._restore(now, noise.rate)
            return Verdict.NOISE
        state = State(
            rate=self._rate,
            rate_growing=self._slow_start,
            # the opening is over once a limit was found, or noise (whose cuts were undone)
            limit_known=self.estimate is not None
            or self._window_cut_at > -math.inf
            or evidence.background > 0,
            window=self.window,
            window_base=self._window_base,
            max_window=self.max_window,
        )
        blame = charge(evidence, state, now, in_flight)
        if blame.charge is Charge.NOISE:
            return Verdict.NOISE
        if blame.charge is Charge.WINDOW:
            return self._cut_window(now, pause, blame.worked, sent_at)
        if blame.charge is Charge.WINDOW_FALLEN:
            # The count that worked is unknown now: cut multiplicatively (AIMD, CUBIC's beta),
            # and leave the rate alone.
            return self._cut_window(now, pause, math.floor(self.window * t.window_cut), sent_at)
        self._cycles.cut(now, resumed=max(self.paused_until, now + pause), rate=self._rate)
        if self._rate == math.inf:
            self._slow_start = True  # the first limit: from the rate sent, doubling
            rate = evidence.sent_rate(now, since=self.paused_until)
        else:
            rate = self._rate_cut(now)
        self._pause(now, pause)
        self._rate = self._base = min(self.ceiling, max(t.min_rate, rate))
        self._cut_at = now
        self._ok_since_cut = 0
        self._resumed_at = self.paused_until
        # A measured estimate rests on a guess about the bucket's burst (`_rate_cut`): test it
        # sooner than the pause alone would say.
        self._probe_s = self._probe_for(pause)
        if self._guessed:
            self._probe_s = min(self._probe_s, t.guessed_probe_s)
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
        self._guessed = False
        estimate = rate * share
        elapsed = now - self._cut_at
        if t.measured_min_s <= elapsed < math.inf and share != t.found:
            # Over a whole cycle, from the last cut (its pause included) to this one, a token
            # bucket lets through exactly its rate: its burst refilled during the pause. Take
            # that when it is lower, within reason: a run held back by something else (its
            # tail, its window) answers fewer than the limit would allow. Not after a probe:
            # its cycle climbed from the plateau, so its average is the old limit, not the new.
            # That the burst refilled is a guess: a bucket of a tenth of a second's burst
            # refills little of it, and its measured rate falls short by the pause's share.
            measured = self._ok_since_cut / elapsed
            self._guessed = measured < estimate
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
        used = max(self._base, 2.0 * self._evidence.sent_rate(now))
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

    def _restore(self, now: float, rate: float) -> None:
        """Back to `rate` (math.inf: unlimited), on its plateau, as if no cut had come since."""
        self._slow_start = False
        self._rate = self._base = min(self.ceiling, rate)
        if self._rate == math.inf:
            self.estimate = None
        else:
            self.estimate = self._rate / self.tuning.plateau
            self._resumed_at = now - self.tuning.recovery_s
        self._cycles.restart(now, now, self._rate)

    # --- the window ------------------------------------------------------------------------

    def _cut_window(self, now: float, pause: float, window: int, sent_at: float) -> Verdict:
        self._held_at = sent_at + self.tuning.burst_s
        self._held = self._evidence.held_at(self._held_at)
        window = max(window, self._held)  # what the server took at once worked, whatever the
        # counts in flight its burst was granted with
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
        self._cycles.restart(now, self.paused_until, self._rate)  # another regime: rate cuts
        # before it say nothing of those after
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
