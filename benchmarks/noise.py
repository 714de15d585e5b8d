"""Random 429s with no limit behind them: the collector clean, then with 1% and 5% of its
answers refused at random, on one simulator (SPEC 8, scattered 429s; the 5% row is info).

The runs are longer than the 20 ms rows': a scattered 429 delays its own request by its
`retryDelay` (1 s, SPEC 5.3's floor), so the last ones end a run a second or two after the
clean run would have ended, whatever its throughput. On 10,000 machines, which a quick host
collects in 5 s, that fixed tail alone was a fifth of the run (64 to 95% in paired runs of
2026-12-03); at 30,000 the same pairs measured 96 to 100%.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.context import (
    CONCURRENCY,
    DENSE_429,
    FAST_MS,
    HEADLINE_SHAPE,
    LATENCY_SPREAD,
    SCATTERED_429,
    Context,
    keep_machine_list,
    mean_ms,
    spec,
)
from benchmarks.harness import Child, run_collector, shape_in_use, start_simulator, trouble
from benchmarks.report import Report, Target

SCATTERED = Target(">=", 70, "% of the same run without them")


def bench_scattered(ctx: Context) -> None:
    report, budget = ctx.report, ctx.budget
    n, shape = ctx.sizes.scattered, shape_in_use(HEADLINE_SHAPE)
    scale = f"{spec(n, None)}, {mean_ms(FAST_MS)}, conc {CONCURRENCY}, {shape}"
    if not budget.allows(90):
        report.not_run(f"scattered 429s ({SCATTERED_429:.0%})", scale, SCATTERED, "time budget")
        return
    sim = start_simulator(n, FAST_MS, spread=LATENCY_SPREAD, shape=shape, prerender=True)
    noisy = dense = None
    served = dense_served = 0
    try:
        machines = keep_machine_list(sim, ctx.work, "noise")
        clean = run_collector(ctx.work, sim, machines, budget.cap(120), concurrency=CONCURRENCY)
        if budget.allows(30) and not trouble(clean, n):
            noisy, served = run_noisy(ctx, sim, machines, SCATTERED_429, 3 * clean.wall_s)
        if budget.allows(40) and noisy is not None and not noisy.timed_out:
            dense, dense_served = run_noisy(ctx, sim, machines, DENSE_429, 4 * clean.wall_s)
    finally:
        sim.stop()
    problem = trouble(clean, n)
    if problem or clean.summary.rate is None:
        report.fail(f"scattered 429s ({SCATTERED_429:.0%})", scale, str(problem), SCATTERED)
        return
    report.info(
        "collector, no 429s",
        scale,
        f"{clean.summary.rate:.0f} machines/s (wall {clean.wall_s:.1f} s)",
        machines_per_s=clean.summary.rate,
    )
    scattered_row(report, clean, noisy, served, SCATTERED_429, SCATTERED)
    scattered_row(report, clean, dense, dense_served, DENSE_429, None)


def run_noisy(
    ctx: Context, sim: Any, machines: Path, share: float, timeout_s: float
) -> tuple[Child, int]:
    """The collector again on the same site, `share` of the answers now random 429s (a live
    knob); the run and the machines the simulator served meanwhile."""
    served_before = sum(sim.counters.sessions_served.values())
    sim.faults.p_429 = share
    noisy = run_collector(
        ctx.work, sim, machines, ctx.budget.cap(max(30, timeout_s)), concurrency=CONCURRENCY
    )
    return noisy, sum(sim.counters.sessions_served.values()) - served_before


def scattered_row(
    report: Report,
    clean: Child,
    noisy: Child | None,
    served: int,
    share: float,
    target: Target | None,
) -> None:
    """Random 429s against the clean run: the collector's rate, or the server's if killed.
    With no target (dense noise, README's known limits), an info row."""
    name = f"{'scattered' if target else 'dense'} 429s ({share:.0%})"
    scale = "the run above, random 429s added"
    if noisy is None:
        if target is not None:
            report.not_run(name, scale, target, "time budget")
        return
    clean_rate = clean.summary.rate or 0.0
    rate, how, counts = noisy.summary.rate, "", True
    if noisy.timed_out or rate is None:
        rate, how = served / noisy.wall_s, f" (stopped after {noisy.wall_s:.0f} s: served/s)"
    elif noisy.returncode != 0:  # fast but not whole: machines failed under 1% noise
        how, counts = f" (exit {noisy.returncode}, {noisy.summary.failed} machines failed)", False
    percent = 100 * rate / clean_rate if clean_rate else 0.0
    measured = f"{rate:.0f} vs {clean_rate:.0f} machines/s: {percent:.0f} %{how}"
    figures = {
        "machines_per_s": round(rate, 1),
        "clean_machines_per_s": clean_rate,
        "throttled": noisy.summary.throttled,
        "exit_code": noisy.returncode,
    }
    if target is None:
        report.info(name, scale, measured, **figures)
        return
    report.check(name, scale, measured, target, percent if counts else 0.0, **figures)
