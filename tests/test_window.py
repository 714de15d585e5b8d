"""The evidence of a limit (`collector.pacing.evidence`): which control a 429 is charged to.

Plain values in, a `Blame` out: no controller, no clock, no event loop.
"""

from __future__ import annotations

import math

from collector.pacing.evidence import Blame, Charge, Evidence, State, charge
from collector.pacing.tuning import TUNING

OPENING = State(
    rate=math.inf, rate_growing=False, limit_known=False, window=64, window_base=64, max_window=64
)


def answered(evidence: Evidence, ok: int, refused: int, *, at: float, in_flight: int) -> None:
    for i in range(ok):
        evidence.success(at + i * 1e-4, in_flight)
    for i in range(refused):
        evidence.refused(at + 0.01 + i * 1e-4, in_flight)


class TestOpening:
    def test_a_flood_in_the_opening_is_charged_to_the_rate_at_once(self) -> None:
        """Before any limit is known, 5 429s among the last 10 answers point to the rate even
        while a second of burst successes keeps their share of that second under 5 %."""

        evidence = Evidence(TUNING)
        answered(evidence, 300, 5, at=0.0, in_flight=64)
        assert not evidence.dense(0.1)
        assert charge(evidence, OPENING, 0.1, 64) == Blame(Charge.RATE)

    def test_the_flood_rule_ends_with_the_opening(self) -> None:
        """Once a limit is known, the same few 429s are not enough: the share must be dense."""

        evidence = Evidence(TUNING)
        answered(evidence, 300, 5, at=0.0, in_flight=64)
        later = State(
            rate=math.inf, rate_growing=False, limit_known=True, window=64, window_base=64,
            max_window=64,
        )  # fmt: skip
        assert charge(evidence, later, 0.1, 64) == Blame(Charge.NOISE)

    def test_scattered_429s_are_no_flood(self) -> None:
        """One 429 in a hundred answers, as noise gives, never makes a flood."""

        evidence = Evidence(TUNING)
        for i in range(2000):
            at = i * 1e-3
            if i % 100 == 99:
                evidence.refused(at, 64)
                assert charge(evidence, OPENING, at, 64).charge is Charge.NOISE
            else:
                evidence.success(at, 64)


class TestRateOrWindow:
    def test_a_growing_rate_takes_the_429s_above_the_flights_that_worked(self) -> None:
        """In the rate's slow start, past the most the server answered in one second, 429s sent
        with more in flight than any success (the doubling brought them) go to the rate."""

        evidence = Evidence(TUNING)
        evidence.refused(0.0, 4)  # the first limit: 2xx are counted per second from here
        for i in range(300):
            evidence.success(1.0 + i / 300, 8 + i // 30)  # in flight rises with the rate
        for i in range(3):
            evidence.refused(2.0 + i * 1e-3, 19)
        growing = State(
            rate=700.0, rate_growing=True, limit_known=False, window=64, window_base=64,
            max_window=64,
        )  # fmt: skip
        assert evidence.steep(2.01, 19, 19)  # what alone would have cut the window
        assert charge(evidence, growing, 2.01, 19) == Blame(Charge.RATE)

    def test_a_full_window_takes_steep_429s(self) -> None:
        """With the window full, 429s sent above the most in flight that succeeded cut the
        window back to that count."""

        evidence = Evidence(TUNING)
        answered(evidence, 50, 0, at=0.0, in_flight=5)
        answered(evidence, 0, 3, at=0.1, in_flight=7)
        state = State(
            rate=math.inf, rate_growing=False, limit_known=False, window=7, window_base=7,
            max_window=32,
        )  # fmt: skip
        assert charge(evidence, state, 0.2, 7) == Blame(Charge.WINDOW, worked=5)


class TestBackground:
    PACED = State(
        rate=200.0, rate_growing=False, limit_known=True, window=64, window_base=64, max_window=64
    )

    def test_noise_found_raises_the_share_that_is_dense(self) -> None:
        """6 429s in 100 answers are dense on a clean run, and not once 5 % of noise is known:
        then it takes `noise_margin` times that share."""

        clean, noisy = Evidence(TUNING), Evidence(TUNING)
        noisy.background = 0.05
        for evidence in (clean, noisy):
            answered(evidence, 94, 6, at=0.0, in_flight=1)
        assert clean.dense(0.1)
        assert not noisy.dense(0.1)

    def test_a_lone_paced_429_beside_known_noise_cuts_nothing(self) -> None:
        """Paced at the server's peak, a lone 429 is charged to the rate; once noise is known,
        the same 429 is noise, and only dense ones point to the limit."""

        clean, noisy = Evidence(TUNING), Evidence(TUNING)
        noisy.background = 0.02
        for evidence in (clean, noisy):
            answered(evidence, 200, 1, at=0.0, in_flight=1)
        assert charge(clean, self.PACED, 0.1, 1) == Blame(Charge.RATE)
        assert charge(noisy, self.PACED, 0.1, 1) == Blame(Charge.NOISE)
        answered(noisy, 0, 30, at=0.2, in_flight=1)
        assert charge(noisy, self.PACED, 0.3, 1) == Blame(Charge.RATE)


def test_the_sent_rate_leaves_a_pause_out() -> None:
    """100 requests in the 0.2 s since a pause ended are 500/s, not the 100/s of the second."""

    evidence = Evidence(TUNING)
    for i in range(100):
        evidence.sent(9.8 + i * 0.002)
    assert evidence.sent_rate(10.0) == 100.0
    assert math.isclose(evidence.sent_rate(10.0, since=9.8), 500.0)


def test_noise_found_raises_the_steepness_the_window_needs() -> None:
    """3 of 10 refused at the top count in flight, none of 30 below: the window's sign on a
    clean run, and not beside 10 % of noise found, whose 429s bring 3 of 10 there by chance."""

    clean, noisy = Evidence(TUNING), Evidence(TUNING)
    noisy.background = 0.1
    for evidence in (clean, noisy):
        answered(evidence, 30, 0, at=0.0, in_flight=4)
        answered(evidence, 7, 3, at=0.5, in_flight=8)
    assert clean.steep(0.6, 8, 8)
    assert not noisy.steep(0.6, 8, 8)


def test_held_at_counts_the_successes_in_flight_at_a_moment() -> None:
    """Of three successes, two were sent by 0.01 and answered after it: the server took those
    two at once; the one answered before 0.01, and any without a send time, do not count."""

    evidence = Evidence(TUNING)
    evidence.success(0.005, 1, sent_at=0.0)  # answered before the moment
    evidence.success(0.02, 2, sent_at=0.001)
    evidence.success(0.03, 9, sent_at=0.002)
    evidence.success(0.03, 3)  # no send time known
    assert evidence.held_at(0.01) == 2
