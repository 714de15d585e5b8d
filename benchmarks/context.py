"""What every bench shares: the SPEC 8 settings, the sizes of a full and a quick run, the context.

Sizes are scaled down from the SPEC's only where its size would not fit the time budget (about
8 minutes on 2 cores for the full run); each row of the table says its size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.harness import REPO, Budget, Child
from benchmarks.report import Report

CONCURRENCY = 64
LIMITED_CONCURRENCY = 32  # SPEC 8's in-flight-bound setting, kept for both limits
HEADLINE_SHAPE = "sparse"
LATENCY_MS = 100.0  # latency-bound and site-wide
FAST_MS = 20.0  # every other row: SPEC 8's 20 ms
# Latencies above are means: each answer takes the mean times a factor drawn evenly from
# [1 - spread, 1 + spread]. A constant latency puts the workers in lockstep, as no real server
# does: answers due at the same instant queue behind one another in both event loops, and a
# bare aiohttp loop then reaches 478/s at 100 ms and concurrency 64, against 600/s with 10 %
# spread around the same mean (BENCHMARKS.md, "The latency spread").
LATENCY_SPREAD = 0.1


RATE_LIMIT = 200.0
IN_FLIGHT = 6
BOTH_RATE, BOTH_IN_FLIGHT = 100.0, 8
SCATTERED_429 = 0.01
DENSE_429 = 0.05  # an info row, no SPEC target: noise dense enough to be cut for, then undone
MEAN_SESSIONS = 3  # the simulator's sessions per machine on average (data.MEAN_SESSIONS)
RESULTS = REPO / "benchmarks" / "results"


def mean_ms(ms: float) -> str:
    """A simulated latency as the table shows it: the mean and its spread."""
    return f"{ms:g} ms ±{LATENCY_SPREAD:.0%}"


@dataclass(frozen=True, slots=True)
class Sizes:
    """Machines per bench; None skips the bench. SPEC 8 sizes in `FULL`'s comments."""

    budget_s: float  # every bench together; a bench that would start after it is not run
    latency: int  # spec: 20,000 (also the site-wide site: spec 20,000)
    rate: int  # spec: no size
    in_flight: int  # spec: no size
    both: int  # spec: no size
    fast: int  # spec: CPU per 10,000, memory at 10,000
    scattered: int  # spec: no size; long enough that the last retries' 1 s is a small part
    plain: int  # the seed's script, on a sample
    latency_loop: bool  # the minimal loop beside latency-bound too (a reference: ~35 s at 20,000)
    big: int | None  # spec: memory at 200,000
    big_sessions: int | None  # spec: a site-wide run of 200,000 sessions


FULL = Sizes(
    # The two 200,000 rows take 4 to 6 minutes on 2 cores shared with the simulator.
    budget_s=1200.0,
    latency=20_000,
    rate=4_000,
    in_flight=6_000,
    both=2_000,
    fast=10_000,
    scattered=30_000,
    plain=150,
    latency_loop=True,
    big=200_000,
    big_sessions=200_000,
)
QUICK = Sizes(
    budget_s=200.0,
    latency=5_000,
    rate=2_000,
    in_flight=3_000,
    both=1_000,
    fast=10_000,
    scattered=10_000,
    plain=100,
    latency_loop=True,
    big=None,
    big_sessions=None,
)


@dataclass
class Context:
    """What every bench gets, and what one bench leaves for a later one."""

    report: Report
    budget: Budget
    work: Path
    sizes: Sizes
    rss_10k: float | None = None  # the fast run's peak RSS, for the 200,000 row


def spec(size: int, spec_size: int | None) -> str:
    """`20,000 machines` or `5,000 machines (spec: 20,000)`."""
    if spec_size is None or size == spec_size:
        return f"{size:,} machines"
    return f"{size:,} machines (spec: {spec_size:,})"


def keep_machine_list(sim: Any, work: Path, name: str) -> Path:
    path = work / f"machines-{name}.txt"
    sim.site.write_machine_list(path, form="name")
    return path


def minimal_row(report: Report, minimal: Child | None, scale: str) -> float | None:
    """The minimal loop's figure as a reference row; its rate, or None."""
    name = "  minimal loop, same"
    if minimal is None:
        report.not_run(name, scale, "-", "time budget")
        return None
    rate = minimal.summary.rate
    if minimal.returncode != 0 or rate is None:
        report.info(name, scale, f"failed: {minimal.tail()}")
        return None
    report.info(
        name,
        scale,
        f"{rate:.0f} machines/s (wall {minimal.wall_s:.1f} s)",
        machines_per_s=rate,
        cpu_s=round(minimal.cpu_s, 2),
    )
    return rate
