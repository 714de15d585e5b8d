"""What the rate cuts did: requests grouped by the cut they were sent after, and whether cutting
lowered the share of 429s (a limit) or left it where it was (noise).

Pure: plain numbers in, plain numbers out, no clock read. The controller opens a cycle at each
rate cut (`Cycles.cut`) and reports every grant and answer with its send time; asked at each
fresh 429, `Cycles.finding` says whether the 429s follow the rate we send at.

Why it is needed: at one rate, a gateway's random 429s at 5 % look like a limit 5 % below that
rate. Only a cut tells them apart. Below a limit, a rate limit's 429s stop, and well above one
its share of 429s falls as the rate falls while its successes per second stay at the limit.
Noise refuses the same share at every rate, and its successes fall with the rate. Without this,
each cut that does not lower the share is followed by another, and 5 % of noise drags a
1,000/s run down to 30/s for good.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, replace

from collector.pacing.tuning import Tuning

MIN_SENDING_S = 0.001  # a cycle cut the moment it resumed still sent: no division by zero


def share_of(refused: int, ok: int) -> float:
    """The share of 429s among answers (0 with none)."""
    return refused / max(1, ok + refused)


@dataclass(slots=True)
class Cycle:
    """The requests sent between two rate cuts, and their answers."""

    start: float  # the cut that opened it: requests sent from here on are counted in it
    resumed: float  # the end of that cut's pause: the cycle sends from here
    rate: float  # the rate before the cut that opened it (the first: the rate it opened at)
    end: float = math.inf  # the cut that closed it
    sent: int = 0
    ok: int = 0
    refused: int = 0
    tail: int = 0  # of those answers, the ones that came after its closing cut ...
    tail_refused: int = 0  # ... and how many of them were 429s

    @property
    def share(self) -> float:
        return share_of(self.refused, self.ok)


@dataclass(frozen=True, slots=True)
class Segment:
    """Consecutive cycles pooled into enough answers to measure."""

    sending_s: float  # the time they were sending, their pauses left out
    sent: int
    ok: int
    refused: int
    tail: int
    tail_refused: int
    rate: float  # the `Cycle.rate` of the first of them

    @property
    def share(self) -> float:
        return share_of(self.refused, self.ok)

    @property
    def sent_rate(self) -> float:
        return self.sent / self.sending_s

    @property
    def ok_rate(self) -> float:
        return self.ok / self.sending_s


@dataclass(frozen=True, slots=True)
class Noise:
    """The finding that the 429s are noise: their share, and the rate to go back to."""

    share: float
    rate: float  # the rate before the cuts that did not lower the share (math.inf: unlimited)


class Cycles:
    """The latest cycles between rate cuts, the open one last."""

    __slots__ = ("_closed", "_open", "tuning")

    def __init__(self, tuning: Tuning) -> None:
        self.tuning = tuning
        self._open: Cycle | None = None  # None until the first grant
        self._closed: deque[Cycle] = deque(maxlen=tuning.cycles_kept)

    # --- records ---------------------------------------------------------------------------

    def sent(self, now: float, rate: float) -> None:
        if self._open is None:
            self._open = Cycle(start=now, resumed=now, rate=rate)
        self._open.sent += 1

    def answered(self, now: float, sent_at: float, refused: bool) -> None:
        """An answer at `now`, counted in the cycle its request was sent in (if still kept)."""
        cycle = self._open
        if cycle is None:
            return
        if sent_at < cycle.start:
            cycle = next((c for c in reversed(self._closed) if c.start <= sent_at), None)
            if cycle is None:
                return
            cycle.tail += 1
            cycle.tail_refused += refused
        if refused:
            cycle.refused += 1
        else:
            cycle.ok += 1

    def restart(self, now: float, resumed: float, rate: float) -> None:
        """Forget every cycle: the window was cut, or noise was found. One opens at `now`."""
        self._closed.clear()
        self._open = Cycle(start=now, resumed=resumed, rate=rate)

    # --- the finding -----------------------------------------------------------------------

    def cut(self, now: float, resumed: float, rate: float) -> None:
        """A rate cut at `now` from `rate`, its pause until `resumed`: the open cycle closes
        and another opens."""
        if self._open is not None:
            self._open.end = now
            self._closed.append(self._open)
        self._open = Cycle(start=now, resumed=resumed, rate=rate)

    def finding(self, now: float) -> Noise | None:
        """Noise, if the cuts so far lowered the rate but not the share of 429s.

        Asked at each fresh 429: the open cycle counts as it stands, so a rate held low after
        its cuts, still refused as often, tells as soon as one that was cut again would.
        """
        t = self.tuning
        if self._open is None or now <= self._open.resumed:
            return None
        cycles = [*self._closed, replace(self._open, end=now)]
        later = _pool(cycles, t)
        if later is None:
            return None
        earlier = _pool(cycles[: -later[1]], t)
        if earlier is None:
            return None
        a, b = earlier[0], later[0]
        tail = a.tail + b.tail
        tail_share = share_of(
            a.tail_refused + b.tail_refused, tail - a.tail_refused - b.tail_refused
        )
        if not (
            b.sent_rate <= t.noise_rate_fall * a.sent_rate  # the cuts lowered the rate ...
            and b.ok_rate <= t.noise_ok_fall * a.ok_rate  # ... and what the server took with it
            and b.share * t.noise_share_ratio >= a.share  # ... but not the share refused
            and a.share * t.noise_share_ratio >= b.share  # (a rise: a limit that fell)
            and t.noise_share_min <= b.share <= t.noise_share_max
            # A limit refuses most of what was on its way when its 429 came: it had run out.
            # Noise refuses those as rarely as the rest.
            and tail >= t.noise_segment_refused
            and tail_share <= max(t.noise_share_max, t.noise_share_ratio * b.share)
        ):
            return None
        pooled = share_of(a.refused + b.refused, a.ok + b.ok)
        # Back to the rate before the first cut that left the share where it is: a cycle
        # refused as often was cut for the noise too, one near none was below a limit.
        ratio = t.noise_share_ratio
        similar = (
            c.rate for c in cycles if pooled <= c.share * ratio and c.share <= pooled * ratio
        )
        return Noise(share=pooled, rate=max(a.rate, *similar))


def _pool(cycles: list[Cycle], t: Tuning) -> tuple[Segment, int] | None:
    """The newest of `cycles` pooled until they hold enough answers, and how many it took."""
    sending = 0.0
    sent = ok = refused = tail = tail_refused = 0
    for taken, cycle in enumerate(reversed(cycles), start=1):
        sending += max(cycle.end - cycle.resumed, MIN_SENDING_S)
        sent, ok, refused = sent + cycle.sent, ok + cycle.ok, refused + cycle.refused
        tail, tail_refused = tail + cycle.tail, tail_refused + cycle.tail_refused
        if ok + refused >= t.noise_segment_answers and refused >= t.noise_segment_refused:
            return Segment(sending, sent, ok, refused, tail, tail_refused, cycle.rate), taken
    return None
