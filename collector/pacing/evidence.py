"""What the answers say about a limit: the bookkeeping of calls in flight, and which control
a 429 is charged to.

Pure: plain numbers in, plain numbers out, no clock read. `Evidence` keeps the latest answers
with how many requests were in flight at each one's send; `charge` reads it and says whether a
429 points to a limit on calls in flight (the window), to a rate limit, or to neither (noise).
The controller applies the answer; it does not look inside.

A server that limits calls in flight refuses the requests sent with many in flight far more
often than those sent with few; a server that limits the rate refuses alike whatever was in
flight. "In flight" is counted from the grant to the answer, never while waiting for a slot.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from dataclasses import dataclass

from collector.pacing.tuning import Tuning


class Charge(enum.Enum):
    """What a fresh 429 (one sent after the last cut) points to."""

    WINDOW = "window"  # a limit on calls in flight; cut the window to `Blame.worked`
    WINDOW_FALLEN = "window_fallen"  # that limit has fallen below the window; cut it by a share
    RATE = "rate"  # a rate limit
    NOISE = "noise"  # no sign of a limit


@dataclass(frozen=True, slots=True)
class Blame:
    charge: Charge
    worked: int = 0  # for WINDOW: the most in flight that succeeded below this 429's count


@dataclass(frozen=True, slots=True)
class State:
    """What `charge` needs of the controller: plain values."""

    rate: float  # math.inf: unlimited
    rate_growing: bool  # in the rate's slow start: no estimate yet, doubling
    limit_known: bool  # a rate estimate, a window cut or noise found: the opening is over
    window: int
    window_base: int  # the window right after its last cut
    max_window: int


class Evidence:
    """The latest answers, sends and successes, as the charging of 429s reads them."""

    __slots__ = (
        "_answers",
        "_count",
        "_ok_flights",
        "_ok_spans",
        "_second",
        "_sent",
        "background",
        "peak",
        "tuning",
    )

    def __init__(self, tuning: Tuning) -> None:
        self.tuning = tuning
        self._sent: deque[float] = deque()  # grant times within the last sent_window_s
        # (when, refused, in flight at its send) of the latest answers
        self._answers: deque[tuple[float, bool, int]] = deque(maxlen=tuning.answers_kept)
        # How many were in flight with each of the latest successes: a limit on calls in flight
        # refuses only requests sent with more than it allows, a rate limit refuses any.
        self._ok_flights: deque[int] = deque(maxlen=tuning.ok_flights_kept)
        # (sent, answered) of the same successes: which of them were in flight at one moment
        self._ok_spans: deque[tuple[float, float]] = deque(maxlen=tuning.ok_flights_kept)
        self._second = -math.inf  # the clock second being counted, from the first 429 on ...
        self._count = 0  # ... its 2xx answers so far, and
        self.peak = 0  # the most 2xx answers of one second before it
        self.background = 0.0  # the share of 429s found to be noise (`cycles`), once found

    # --- records ---------------------------------------------------------------------------

    def sent(self, now: float) -> None:
        sent = self._sent
        sent.append(now)
        horizon = now - self.tuning.sent_window_s
        while sent[0] < horizon:
            sent.popleft()

    def success(self, now: float, in_flight: int, sent_at: float | None = None) -> None:
        self._answers.append((now, False, in_flight))
        if sent_at is not None:
            self._ok_spans.append((sent_at, now))
        if self._second > -math.inf:
            second = math.floor(now)
            if second != self._second:
                self.peak = max(self.peak, self._count)
                self._second, self._count = second, 0
            self._count += 1
        if in_flight:
            self._ok_flights.append(in_flight)

    def refused(self, now: float, in_flight: int) -> None:
        self._answers.append((now, True, in_flight))
        if self._second == -math.inf:
            self._second = math.floor(now)  # count the server's 2xx from here (see `busiest`)

    def forget(self) -> None:
        """Drop the latest answers (not the peak, not the background): the run goes back to a
        rate they were not sent at, and counts in flight seen at another rate mislead."""
        self._answers.clear()
        self._ok_flights.clear()
        self._ok_spans.clear()

    # --- readings --------------------------------------------------------------------------

    def busiest(self) -> int:
        """The most 2xx answers of one clock second since the first 429."""
        return max(self.peak, self._count)

    def sent_rate(self, now: float, since: float = -math.inf) -> float:
        """Requests granted per second over the last `sent_window_s`, or since `since` (the end
        of a pause: the paused part of the second sent nothing, and says nothing of the rate)."""
        t = self.tuning
        sent = self._sent
        horizon = now - t.sent_window_s
        while sent and sent[0] < horizon:
            sent.popleft()
        if since <= horizon:
            return len(sent) / t.sent_window_s
        count = sum(1 for at in sent if at >= since)
        return count / max(now - since, t.min_sample_s)

    def ok_flight_high(self) -> int:
        """The count in flight that all but `ok_flight_share` of the latest successes kept to."""
        flights = sorted(self._ok_flights)
        if not flights:
            return 0
        return flights[min(len(flights) - 1, int(self.tuning.ok_flight_share * len(flights)))]

    def held_at(self, moment: float) -> int:
        """How many of the latest successes were in flight at `moment`: sent by then, answered
        after it. The server took them all while they were."""
        return sum(1 for sent, answered in self._ok_spans if sent <= moment < answered)

    def worked_below(self, in_flight: int) -> int:
        """The most in flight among the latest successes sent with fewer than `in_flight`."""
        return max((f for f in self._ok_flights if f < in_flight), default=in_flight - 1)

    def dense(self, now: float) -> bool:
        """Whether the recent 429s are dense enough to say the rate is above a limit."""
        t = self.tuning
        horizon = now - t.answers_window_s
        recent = [refused for at, refused, _ in self._answers if at >= horizon]
        count = sum(recent)
        share = max(t.dense_share, t.noise_margin * self.background)
        return count >= t.dense_count and count >= share * len(recent)

    def flood(self) -> bool:
        """Whether `dense_count` of the last `flood_answers` answers were 429s."""
        t = self.tuning
        answers = self._answers
        first = max(0, len(answers) - t.flood_answers)
        return sum(answers[i][1] for i in range(first, len(answers))) >= t.dense_count

    def steep(self, now: float, in_flight: int, split: int) -> bool:
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
        # Beside noise already found, a few of its 429s land on the counts at the top by chance:
        # only as many more than it brings, and a share well above it, point to the window.
        noise = t.noise_margin * self.background
        return (
            hi_refused >= t.window_refused_count + noise * hi
            and hi_share >= max(t.window_refused_share, noise)
            and hi_share >= t.window_steepness * lo_share
        )


def charge(evidence: Evidence, state: State, now: float, in_flight: int) -> Blame:
    """Which control a 429 sent after the last cut, with `in_flight` in flight, points to.

    `evidence` must already hold this 429.
    """
    t = evidence.tuning
    if state.rate_growing and in_flight < state.window and state.rate > evidence.busiest():
        # The rate's slow start, not the window, holds the calls in flight, and it has passed
        # the most the server ever answered in one second: each doubling brings more in flight,
        # so its 429s come with more than the earlier successes, as a limit on calls in flight
        # would have it. The rate is the likelier culprit, and its cut brings them down too
        # (Little's law); a limit on calls in flight still shows once the rate stops growing.
        return Blame(Charge.RATE)
    lately = evidence.ok_flight_high()
    # The server's count of calls in flight is never above ours (ours runs from the grant
    # until the answer is read), so below its limit no request is refused for being in
    # flight; above it some still pass, as ours counts answers on their way back.
    if in_flight > 1 and (
        evidence.steep(now, in_flight, in_flight) or evidence.steep(now, in_flight, lately + 1)
    ):
        # Refused far more often with this many in flight or more than with fewer: the server
        # counts calls in flight (Citrix Monitor allows one per tenant); a rate limit or noise
        # refuses alike at every count. Go back to the most that worked below it, as Vegas and
        # Envoy's gradient settle on the concurrency that kept answers good, rather than
        # halving as AIMD would: that count is known, and every extra try costs a run-wide
        # pause.
        return Blame(Charge.WINDOW, evidence.worked_below(in_flight))
    if in_flight > 1 and in_flight > min(state.window_base, lately):
        # Sent with more in flight than nearly all the latest successes (or above the window
        # that held): too few yet to tell a limit on calls in flight from noise, but never
        # charged to the rate, which such a limit would drag down for nothing.
        return Blame(Charge.NOISE)
    unlimited = state.rate == math.inf
    if (
        unlimited
        and state.window < state.max_window
        and in_flight >= state.window
        and evidence.sent_rate(now) <= t.window_rate_margin * evidence.busiest()
        and evidence.dense(now)
    ):
        # Dense 429s with the window full (below `concurrency`: a limit on calls in flight was
        # found, or the window is still starting), no rate limit known, and no faster than the
        # server has already answered 2xx in one second: a rate limit would have refused those
        # rates too, so the limit on calls in flight has fallen.
        return Blame(Charge.WINDOW_FALLEN)
    if unlimited:
        if evidence.dense(now) or (not state.limit_known and evidence.flood()):
            # Dense 429s end an unlimited run's free rein. In its opening the last few answers
            # say it sooner than the share of the last second, which still holds the burst a
            # token bucket let through: every answer waited for is another 429 sent.
            return Blame(Charge.RATE)
        # Scattered 429s with no ceiling and nothing in flight to blame: a gateway's noise.
        # Slowing the run for them would cap it near 1 / (share * pause).
        return Blame(Charge.NOISE)
    rare = not evidence.dense(now)
    if rare and (state.rate < t.noise * evidence.busiest() or evidence.background):
        # Far below what the server has taken in one second, and rare: noise. Or rare beside
        # the noise already found: the one 429 that ends a probe above a limit is no different
        # from noise then, so only dense ones tell. Dense 429s are a limit even there: one
        # that has fallen below what the server once took.
        return Blame(Charge.NOISE)
    return Blame(Charge.RATE)
