"""What the rate cuts did (`collector.pacing.cycles`): answers counted by the cut they were sent
after, and noise found only when cutting lowered the rate but not the share of 429s.

Pure and on plain numbers: each test sends cycles of evenly spaced requests, every `every`-th
one refused, answered `LATENCY` later, and cuts between them as the controller would.
"""

from __future__ import annotations

import math

from collector.pacing.cycles import Cycles
from collector.pacing.tuning import TUNING

LATENCY = 0.02
PAUSE = 1.0


def send(
    cycles: Cycles,
    start: float,
    seconds: float,
    rate: float,
    every: int,
    *,
    paced: bool = True,
    tail_refused: bool = False,
) -> float:
    """Send at `rate` (the controller's rate, or unlimited if not `paced`) from `start` for
    `seconds`, every `every`-th request refused; then cut and answer what was on its way,
    refused if `tail_refused`. The end of the cut's pause, where the next cycle starts."""
    count = round(seconds * rate)
    sent = [start + i / rate for i in range(count)]
    end = sent[-1] + LATENCY / 2  # the 429 that ends the cycle is answered here
    for i, at in enumerate(sent):
        cycles.sent(at, rate if paced else math.inf)
        if at + LATENCY <= end:
            cycles.answered(at + LATENCY, at, refused=(i + 1) % every == 0)
    cycles.cut(end, resumed=end + PAUSE, rate=rate if paced else math.inf)
    for at in sent:
        if at + LATENCY > end:
            cycles.answered(at + LATENCY, at, refused=tail_refused)
    return end + PAUSE


def noise_run(cycles: Cycles, rates: list[float], every: int = 20) -> float:
    """Cycles at falling `rates`, each refusing one in `every` (5 %), the first unlimited."""
    now = 0.0
    for i, rate in enumerate(rates):
        now = send(cycles, now, 2.0, rate, every, paced=i > 0)
    return now


def test_answers_count_in_the_cycle_they_were_sent_in() -> None:
    """An answer that comes after the cut counts in the cycle it was sent in, as its tail."""
    cycles = Cycles(TUNING)
    cycles.sent(0.0, math.inf)
    cycles.sent(0.5, math.inf)
    cycles.answered(0.4, 0.0, refused=False)
    cycles.cut(1.0, resumed=2.0, rate=math.inf)
    cycles.answered(1.1, 0.5, refused=True)
    cycles.sent(2.0, 100.0)
    cycles.answered(2.1, 2.0, refused=False)
    first, second = cycles._closed[0], cycles._open
    assert (first.sent, first.ok, first.refused, first.tail, first.tail_refused) == (2, 1, 1, 1, 1)
    assert second is not None and (second.sent, second.ok, second.tail) == (1, 1, 0)


def test_noise_is_found_when_cuts_leave_the_share() -> None:
    """Cut from 400/s to 100/s, still 5 % refused, successes falling with the rate: noise, at
    about 5 %, and the way back is to the rate before those cuts (unlimited here)."""
    cycles = Cycles(TUNING)
    now = noise_run(cycles, [400.0, 300.0, 200.0, 100.0])
    found = cycles.finding(now + 1.0)
    assert found is not None
    assert 0.03 <= found.share <= 0.07
    assert found.rate == math.inf


def test_noise_that_starts_on_a_plateau_goes_back_to_it() -> None:
    """Paced at 500/s without a 429 for 10 s, then cut to 400, 300 and 200/s at 5 % refused:
    the way back is to 500/s, the plateau the noise cut from, not to unlimited."""
    cycles = Cycles(TUNING)
    now = send(cycles, 0.0, 10.0, 500.0, 10**9)
    for rate in (400.0, 300.0, 200.0):
        now = send(cycles, now, 2.0, rate, 20)
    found = cycles.finding(now + 1.0)
    assert found is not None
    assert found.rate == 500.0


def test_a_cut_that_lowers_the_share_is_a_limit() -> None:
    """Refused 5 % at 400/s and 300/s, then 1 % at 200/s and 100/s: the cuts worked."""
    cycles = Cycles(TUNING)
    now = send(cycles, 0.0, 2.0, 400.0, 20, paced=False)
    now = send(cycles, now, 2.0, 300.0, 20)
    now = send(cycles, now, 2.0, 200.0, 100)
    now = send(cycles, now, 2.0, 100.0, 100)
    assert cycles.finding(now + 1.0) is None


def test_successes_that_hold_while_the_rate_falls_are_a_limit() -> None:
    """Far above a 60/s limit, cutting from 400/s to 200/s leaves its share of 429s almost
    where it was (85 % to 70 %), but it still takes 60 a second: a limit, not noise."""
    cycles = Cycles(TUNING)
    now = 0.0
    for rate, paced in ((400.0, False), (300.0, True), (200.0, True)):
        ok_every = round(rate / 60.0)  # one success in this many: 60/s
        count = round(2.0 * rate)
        for i in range(count):
            at = now + i / rate
            cycles.sent(at, rate if paced else math.inf)
            cycles.answered(at + LATENCY, at, refused=i % ok_every != 0)
        end = now + 2.0 + LATENCY
        cycles.cut(end, resumed=end + PAUSE, rate=rate if paced else math.inf)
        now = end + PAUSE
    assert cycles.finding(now + 1.0) is None


def test_a_refused_tail_is_a_limit_that_ran_out() -> None:
    """Each cut leaves the 5 % share where it was, but what was on its way at each cut was
    refused: a limit that had run out, as a bucket does, not noise."""
    cycles = Cycles(TUNING)
    now = 0.0
    for i, rate in enumerate((400.0, 300.0, 200.0, 100.0)):
        now = send(cycles, now, 2.0, rate, 20, paced=i > 0, tail_refused=True)
    assert cycles.finding(now + 1.0) is None


def test_a_share_too_thin_is_not_taken_for_noise() -> None:
    """1 % refused at every rate: a limit that keeps falling as fast as the cuts follow it
    looks the same, so below `noise_share_min` no noise is found."""
    cycles = Cycles(TUNING)
    now = noise_run(cycles, [800.0, 600.0, 400.0, 200.0], every=100)
    assert cycles.finding(now + 1.0) is None


def test_restart_forgets_the_cycles() -> None:
    """After a restart (a window cut, or noise found) the cycles before it weigh nothing."""
    cycles = Cycles(TUNING)
    now = noise_run(cycles, [400.0, 300.0, 200.0, 100.0])
    cycles.restart(now, now, math.inf)
    assert cycles.finding(now + 1.0) is None
