"""The site-sized benches: record size per shape, latency-bound with site-wide mode on the same
site, and the 200,000 rows (per-machine memory, and a site-wide run of 200,000 sessions).
"""

from __future__ import annotations

import math
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.context import (
    CONCURRENCY,
    FAST_MS,
    HEADLINE_SHAPE,
    LATENCY_MS,
    LATENCY_SPREAD,
    MEAN_SESSIONS,
    Context,
    keep_machine_list,
    mean_ms,
    minimal_row,
    spec,
)
from benchmarks.harness import (
    Child,
    data_requests,
    output_lines,
    record_keys,
    run_collector,
    run_minimal,
    shape_in_use,
    start_simulator,
    trouble,
)
from benchmarks.report import Target

# --- record sizes -------------------------------------------------------------------------------


def mean_record_bytes(shape: str, machines: int = 2_000) -> float:
    """Mean bytes of one record as the collector writes it, over `machines` of a seeded site."""
    from collector.flatten import make_flattener, make_record_encoder

    encode = make_record_encoder(make_flattener(), run_id="0" * 36, site_id="0" * 36)
    sim = start_simulator(machines, 0.0, shape=shape)
    try:
        size = count = 0
        for index in range(machines):
            sessions = sim.site.sessions(index)
            size += len(encode(sim.site.name(index), "2026-12-02T00:00:00.000Z", sessions))
            count += len(sessions)
    finally:
        sim.stop()
    return size / count if count else 0.0


def api_session_bytes(shape: str) -> float | None:
    """The simulator's own mean size of one session as the API sends it, where it has one."""
    from collector.simulator import data

    measure = getattr(data, "mean_record_size", None)
    return None if measure is None else float(measure(shape))


def bench_shapes(ctx: Context) -> None:
    for shape in ("full", "sparse"):
        name = f"record size, {shape}"
        if shape_in_use(shape) != shape:
            ctx.report.not_available(name, "-", "-", "the simulator has no shape knob")
            continue
        written = mean_record_bytes(shape)
        sent = api_session_bytes(shape)
        headline = " (headline rows)" if shape == HEADLINE_SHAPE else ""
        sent_text = f"{sent:,.0f} bytes a session as sent, " if sent is not None else ""
        ctx.report.info(
            name, "2,000 machines, seed 1",
            f"{sent_text}{written:,.0f} bytes a record as written{headline}",
            shape=shape, record_bytes=round(written, 1),
            session_bytes=None if sent is None else round(sent, 1),
        )  # fmt: skip


# --- latency-bound and site-wide: one site at 100 ms ----------------------------------------------


def bench_latency(ctx: Context) -> None:
    """Per-machine mode at 100 ms, the minimal loop on the same list, then site-wide mode."""
    report, budget, n = ctx.report, ctx.budget, ctx.sizes.latency
    shape = shape_in_use(HEADLINE_SHAPE)
    scale = f"{spec(n, 20_000)}, {mean_ms(LATENCY_MS)}, conc {CONCURRENCY}, {shape}"
    want = Target(
        ">=",
        0.9 * CONCURRENCY / (LATENCY_MS / 1000),
        "machines/s",
        f"90% of {CONCURRENCY}/{LATENCY_MS / 1000:g} s",
    )
    fewer = Target(">=", 50, "x fewer requests", "same records")
    if not budget.allows(60):
        report.not_run("latency-bound", scale, want, "time budget")
        report.not_run("site-wide", scale, fewer, "time budget")
        return
    per_machine_out = ctx.work / "out-per-machine"
    sim = start_simulator(n, LATENCY_MS, spread=LATENCY_SPREAD, shape=shape)
    try:
        machines = keep_machine_list(sim, ctx.work, "latency")
        before = data_requests(sim)
        child = run_collector(
            ctx.work, sim, machines, budget.cap(150), concurrency=CONCURRENCY, out=per_machine_out
        )
        pm_requests = data_requests(sim) - before
        minimal = None
        if ctx.sizes.latency_loop and budget.allows(60):  # the same calls, without the collector
            minimal = run_minimal(ctx.work, sim, machines, budget.cap(150), CONCURRENCY)
        problem = trouble(child, n)
        s = child.summary
        if problem or s.rate is None:
            report.fail("latency-bound", scale, str(problem), want)
        else:
            report.check(
                "latency-bound",
                scale,
                f"{s.rate:.0f} machines/s (wall {child.wall_s:.1f} s: {n / child.wall_s:.0f}/s)",
                want,
                s.rate,
                machines_per_s=s.rate,
                wall_s=round(child.wall_s, 2),
                cpu_s=round(child.cpu_s, 2),
                peak_rss_mb=round(child.maxrss_mb, 1),
                requests=pm_requests,
            )
        if ctx.sizes.latency_loop:
            minimal_row(report, minimal, "same list and simulator (reference)")
        if problem:
            report.not_run("site-wide", scale, fewer, "the per-machine run failed")
            return
        per_machine = record_keys(output_lines(per_machine_out))
        shutil.rmtree(per_machine_out, ignore_errors=True)
        site_wide(ctx, sim, machines, scale, fewer, per_machine, pm_requests, child)
    finally:
        sim.stop()
        shutil.rmtree(per_machine_out, ignore_errors=True)


def site_wide(
    ctx: Context,
    sim: Any,
    machines: Path,
    scale: str,
    fewer: Target,
    per_machine: Counter[bytes],
    pm_requests: int,
    pm_child: Child,
) -> None:
    """`--site-wide` on the same list: the requests of both modes, and the same records."""
    report, budget, n = ctx.report, ctx.budget, ctx.sizes.latency
    name = "site-wide"
    if not budget.allows(30):
        report.not_run(name, scale, fewer, "time budget")
        return
    out = ctx.work / "out-site-wide"
    before = data_requests(sim)
    child = run_collector(
        ctx.work,
        sim,
        machines,
        budget.cap(120),
        concurrency=CONCURRENCY,
        args=["--site-wide"],
        out=out,
    )
    sw_requests = data_requests(sim) - before
    try:
        if child.returncode == 2:  # a usage error: this build refuses the mode
            report.not_available(name, scale, fewer, f"collector says: {child.tail(1)}")
            return
        problem = trouble(child, n)
        if problem:
            report.fail(name, scale, problem, fewer)
            return
        found = record_keys(output_lines(out))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    ratio = pm_requests / sw_requests if sw_requests else math.inf
    sw_s, pm_s = child.summary.duration_s or 0.0, pm_child.summary.duration_s or 0.0
    records = sum(per_machine.values())
    differ = (per_machine - found).total() + (found - per_machine).total()
    same = differ == 0
    measured = (
        f"{ratio:.0f}x fewer ({sw_requests:,} vs {pm_requests:,} requests), "
        f"{sw_s:.1f} s vs {pm_s:.1f} s, {records:,} records "
        + ("identical" if same else f"but {differ:,} DIFFER")
    )
    report.check(
        name,
        "same site and list as latency-bound",
        measured,
        fewer,
        ratio if same else 0.0,
        requests=sw_requests,
        per_machine_requests=pm_requests,
        duration_s=sw_s,
        per_machine_duration_s=pm_s,
        same_records=same,
        records=records,
        records_differing=differ,
        peak_rss_mb=round(child.maxrss_mb, 1),
    )


# --- 200,000: memory per machine, and a site-wide run of 200,000 sessions -----------------


SITE_WIDE_BIG_RESERVE_S = 90.0  # kept for the site-wide 200,000-session run after this one


def bench_big(ctx: Context) -> None:
    shape = shape_in_use(HEADLINE_SHAPE)
    memory_big(ctx, shape)
    site_wide_big(ctx, shape)


def memory_big(ctx: Context, shape: str) -> None:
    """Per-machine mode over 200,000 machines: peak RSS, and how far above the 10,000 figure."""
    report, budget, n = ctx.report, ctx.budget, ctx.sizes.big
    if n is None:
        return
    name = "memory at 200,000"
    memory = Target("<=", 150, "MB")
    apart = Target("<", 30, "MB above the 10,000 figure")
    scale = f"{spec(n, 200_000)}, {mean_ms(FAST_MS)}, conc {CONCURRENCY}, {shape}"
    if not budget.allows(n / 1000 + SITE_WIDE_BIG_RESERVE_S):
        report.not_run(name, scale, memory, "time budget")
        return
    sim = start_simulator(n, FAST_MS, spread=LATENCY_SPREAD, shape=shape)
    try:
        machines = keep_machine_list(sim, ctx.work, "big")
        timeout = budget.cap(budget.left() - SITE_WIDE_BIG_RESERVE_S)
        child = run_collector(ctx.work, sim, machines, timeout, concurrency=CONCURRENCY)
        served = len(sim.counters.sessions_served)
    finally:
        sim.stop()
    rss = child.maxrss_mb
    problem = trouble(child, n)
    if problem:
        report.fail(name, scale, f"{problem} with {served:,} machines answered; peak RSS so far "
                    f"{rss:.0f} MB", memory)  # fmt: skip
        return
    report.check(name, scale, f"peak RSS {rss:.0f} MB ({child.summary.rate:.0f} machines/s)",
                 memory, rss, peak_rss_mb=round(rss, 1),
                 machines_per_s=child.summary.rate)  # fmt: skip
    if ctx.rss_10k is None:
        report.not_run("  200,000 vs 10,000", "-", apart, "no 10,000 figure")
        return
    gap = rss - ctx.rss_10k
    report.check("  200,000 vs 10,000", "the two memory rows",
                 f"{gap:+.0f} MB ({rss:.0f} vs {ctx.rss_10k:.0f})", apart, gap,
                 gap_mb=round(gap, 1))  # fmt: skip


def site_wide_big(ctx: Context, shape: str) -> None:
    """Peak RSS of `--site-wide` over about 200,000 sessions: a page in memory, not the site."""
    report, budget, sessions = ctx.report, ctx.budget, ctx.sizes.big_sessions
    if sessions is None:
        return
    n = sessions // MEAN_SESSIONS
    name = "site-wide memory"
    scale = f"~{sessions:,} sessions ({n:,} machines), {mean_ms(FAST_MS)}, {shape}"
    memory = Target("<=", 150, "MB")
    if not budget.allows(40):
        report.not_run(name, scale, memory, "time budget")
        return
    sim = start_simulator(n, FAST_MS, spread=LATENCY_SPREAD, shape=shape)
    try:
        machines = keep_machine_list(sim, ctx.work, "big-site")
        child = run_collector(
            ctx.work, sim, machines, budget.cap(240), concurrency=CONCURRENCY, args=["--site-wide"]
        )
    finally:
        sim.stop()
    if child.returncode == 2:
        report.not_available(name, scale, memory, f"collector says: {child.tail(1)}")
        return
    problem = trouble(child, n)
    if problem:
        report.fail(name, scale, f"{problem}; peak RSS so far {child.maxrss_mb:.0f} MB", memory)
        return
    s = child.summary
    report.check(
        name,
        scale,
        f"peak RSS {child.maxrss_mb:.0f} MB ({s.sessions or 0:,} sessions in {s.duration_s:.1f} s)",
        memory,
        child.maxrss_mb,
        peak_rss_mb=round(child.maxrss_mb, 1),
        sessions=s.sessions,
        duration_s=s.duration_s,
    )
