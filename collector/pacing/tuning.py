"""The constants of the pacing controller, in one frozen value, each with why it is what it is.

Tests build variants with `dataclasses.replace`; the run uses `TUNING`. No logic here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Tuning:
    """How the controller reacts; the defaults were tuned against the simulator (SPEC 8)."""

    # --- pauses ---------------------------------------------------------------------------
    default_pause_s: float = 1.0  # a 429 with neither Retry-After nor retryDelay
    min_pause_s: float = 0.25  # shorter cannot let the server recover before the rate drops
    max_pause_s: float = 120.0  # a Retry-After of hours would stall the run for nothing

    # --- rate (CUBIC's shape, RFC 9438, on requests per second) ---------------------------
    cut: float = 0.9  # the rate right after a 429, as a share of the estimate: each 429 pauses
    # the run, so a gentle cut that stays near the limit costs less than AIMD's halving
    deep_cut: float = 0.5  # when slow start ends: it may have overshot by a factor of two
    found: float = 0.98  # the estimate, as a share of the rate, when a probe above it met a 429
    plateau: float = 0.99  # where the climb back levels off, as a share of the estimate
    quick_s: float = 3.0  # a 429 this soon after a pause means the estimate was a burst's
    recovery_s: float = 1.0  # the climb from the cut back to the plateau (concave part)
    probe: float = 0.1  # the probe reaches estimate * (1 + probe) after probe_s (convex part)
    probe_per_pause: float = 45.0  # probe_s = this * pause: a dearer 429 is risked less often
    probe_min_s: float = 10.0  # ... within these bounds
    probe_max_s: float = 600.0
    guessed_probe_s: float = 20.0  # at most this after a cut to a cycle's measured rate, which
    # is right for a bucket of a second's burst and half the limit for one of a tenth: a long
    # run gains the other half within a minute, a right guess costs a 429 every 20 s or so
    slow_start_s: float = 1.0  # the rate's doubling time from the first limit to its estimate:
    # it starts from the rate sent while a token bucket's burst lasted, near or above the limit,
    # so a faster climb overshoots further, in 429s and in the next estimate, before it measures
    measured_min_s: float = 1.5  # the shortest cycle between two cuts whose 2xx rate is taken
    # for a token bucket's: shorter, the bucket's burst still weighs in it
    min_rate: float = 0.5  # requests per second: the floor of every cut
    sent_window_s: float = 1.0  # how far back the rate requests go out at is measured
    min_sample_s: float = 0.1  # ... and at least this far when a pause ended later: the
    # callers the pause held all go at its end, a burst no longer than a round trip

    # --- telling a limit from noise -------------------------------------------------------
    dense_count: int = 5  # while unlimited, 429s point to a limit when at least this many ...
    dense_share: float = 0.05  # ... make at least this share of the recent answers: 1 % of
    # noise in a few hundred answers a second reaches 2 % by chance every few seconds
    flood_answers: int = 10  # before any limit is known, dense_count 429s among this many of
    # the latest answers also point to one: a run's first second holds the burst a token bucket
    # let through, so its share would lag; 1 % of noise makes 5 of 10 once in 4 * 10^7 tries
    answers_window_s: float = 1.0  # "recent"
    answers_kept: int = (
        5000  # and at most this many back: fewer would let chance make 1 % look like 2 %
    )
    noise: float = 0.6  # once paced, a 429 at under this share of the most 2xx answers the
    # server has given in one second is noise: the server has shown it takes more

    # --- noise found by cutting (see `cycles`) ---------------------------------------------
    # Two segments of cycles between rate cuts, the later one sent slower, compare:
    noise_segment_answers: int = 60  # a segment pools cycles until it holds this many answers
    noise_segment_refused: int = 4  # ... and this many 429s: fewer, one 429 more or less would
    # halve or double its share
    noise_rate_fall: float = 0.8  # the later one sent at most this share of the earlier rate
    noise_ok_fall: float = 0.9  # ... and the server took at most this share of its 2xx rate: a
    # limit above which we still are takes as many a second whatever we send
    noise_share_ratio: float = 2.0  # ... yet its share of 429s is within this factor: a limit
    # refuses a smaller share as the rate comes down to it, and none below
    noise_share_min: float = 0.02  # the share of 429s noise is found at, up to ...
    noise_share_max: float = 0.25  # ... this. Less than the least: a limit that keeps falling as
    # fast as the cuts follow it shows the same signs at 1.5 %, and scattered noise that thin
    # never makes the dense second that starts cutting. More than the most: not noise
    noise_margin: float = 3.0  # once noise is found, 429s are dense at this many times its
    # share: 5 % of noise makes 15 % of 50 answers in one try of 300
    cycles_kept: int = 64  # the cycles kept: far more than two segments of noise need

    # --- window (calls in flight) ---------------------------------------------------------
    initial_window: int = 10  # RFC 6928's initial window: few 429s if the limit is lower
    # The window holds at the count that worked for the rate's probe_s (probe_per_pause times
    # the pause, within probe_min_s and probe_max_s) before it tries one more: every try that
    # fails costs a run-wide pause, so a dearer 429 is risked less often, as for the rate.
    window_probe_growth: float = 0.1  # then it grows convexly, by this share per probe_s cubed
    window_cut: float = 0.7  # a cut with no count known to work: CUBIC's beta, gentler than
    # AIMD's halving, since the window is a small integer and each 429 pauses the run
    window_rate_margin: float = 1.1  # "no faster than the server answered": this much slack
    # for the sent rate, which counts the refused requests and the jitter of one second
    ok_flight_share: float = 0.9  # "nearly all": the share of them a count in flight must
    # pass to be over; above it 429s point to a limit on calls in flight
    window_refused_count: int = 2  # a limit on calls in flight refuses at least this many ...
    window_refused_share: float = 0.2  # ... and this share of the requests sent with as many in
    # flight or more: noise refuses 1 %, a rate limit paced near its limit a few %
    steep_window_s: float = 2.0  # "lately" for that comparison: a few answers below the count
    # even at 100/s, and the same state of the run
    window_steepness: float = 4.0  # ... and this many times the share refused with fewer in
    # flight: a rate limit, or noise, refuses alike at every count in flight
    burst_s: float = 0.002  # requests granted this close together are one burst: they reach
    # the server in any order, so which of them it refused says nothing of their counts
    ok_flights_kept: int = 100  # "the latest successes": enough that a rate limit's random
    # 429 seldom lands above all of their counts in flight, few enough to follow a change

    # --- the pacer's waiting --------------------------------------------------------------
    early: float = 0.5  # the head may go this share of an interval early (late wake-ups)
    max_nap_s: float = 0.1  # a waiting caller looks again at least this often


TUNING = Tuning()
