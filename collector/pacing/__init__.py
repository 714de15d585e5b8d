"""Pacing of every request of a run: when it may start, and how many may be in flight.

Five parts, each one idea: `tuning` (the constants, each with its reason), `evidence` (which
control a 429 points to, from the answers and the calls in flight at each), `cycles` (whether
the rate cuts lowered the share of 429s, or the 429s are noise), `controller` (the decisions:
rate and window as pure functions of answers and time) and `pacer` (the GCRA schedule, the
in-flight window and the waiting). Nothing outside this package knows how the
controller decides; the paced transport only reports answers to it.
"""

from __future__ import annotations

from collector.pacing.controller import Controller, Verdict
from collector.pacing.pacer import Clock, Grant, MonotonicClock, Pacer
from collector.pacing.tuning import TUNING, Tuning

__all__ = ["TUNING", "Clock", "Controller", "Grant", "MonotonicClock", "Pacer", "Tuning", "Verdict"]
