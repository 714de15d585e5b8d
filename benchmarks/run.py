"""`make bench`: the real CLI against the embedded simulator, one table of SPEC 8 figures.

Each bench starts a simulator in a thread of this process and runs the collector, and the
baselines it is compared with, as subprocesses (`benchmarks/harness.py`). Ratios are taken in
the same run. The headline rows use the simulator's `sparse` shape (what a tenant typically
sends); the table shows the mean record size of both shapes. Sizes are scaled down from the
SPEC's where its size would not fit the time budget (the whole run must finish in about
8 minutes on 2 cores), and each row says so. `--quick` (`make bench-quick`) skips the
200,000-machine rows and runs smaller sizes.

Throughputs come from each program's own `duration ... s (X machines/s)` summary line: timed
from the start of the run (token request, `/cvad/manage/me` and writing the files included,
interpreter start-up and imports excluded); the subprocess wall time is shown beside it.
Request and 429 counts are the simulator's own.

A row whose feature this build lacks (a simulator knob, `--site-wide`) prints "not
available" instead of failing. The process exits 0 even when a target is missed: it is a
report. It ends with "targets missed: N", and writes every figure to
`benchmarks/results/latest.json` (`quick.json` for `--quick`).

    python -m benchmarks.run [--quick] [--only NAME ...] [--markdown] [--json PATH]
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    REPO,
    Budget,
    Child,
    Unavailable,
    answered_429s,
    child_env,
    data_requests,
    output_lines,
    record_keys,
    run_child,
    run_collector,
    run_minimal,
    shape_in_use,
    start_simulator,
    trouble,
)
from benchmarks.report import (
    Report,
    Target,
    document,
    machine_info,
    machine_line,
    render_markdown,
    render_text,
    write_json,
)

CONCURRENCY = 64
LIMITED_CONCURRENCY = 32  # SPEC 8's in-flight-bound setting, kept for both limits
HEADLINE_SHAPE = "sparse"
LATENCY_MS = 100.0  # latency-bound and site-wide
FAST_MS = 20.0  # every other row: SPEC 8's 20 ms
RATE_LIMIT = 200.0
IN_FLIGHT = 6
BOTH_RATE, BOTH_IN_FLIGHT = 100.0, 8
SCATTERED_429 = 0.01
MEAN_SESSIONS = 3  # the simulator's sessions per machine on average (data.MEAN_SESSIONS)
RESULTS = REPO / "benchmarks" / "results"


@dataclass(frozen=True, slots=True)
class Sizes:
    """Machines per bench; None skips the bench. SPEC 8 sizes in `FULL`'s comments."""

    budget_s: float  # every bench together; a bench that would start after it is not run
    latency: int  # spec: 20,000 (also the site-wide site: spec 20,000)
    rate: int  # spec: no size
    in_flight: int  # spec: no size
    both: int  # spec: no size
    fast: int  # spec: CPU per 10,000, memory at 10,000, scattered 429s: no size
    plain: int  # the seed's script, on a sample
    latency_loop: bool  # the minimal loop beside latency-bound too (a reference: ~35 s at 20,000)
    big: int | None  # spec: memory at 200,000
    big_sessions: int | None  # spec: a site-wide run of 200,000 sessions


FULL = Sizes(
    budget_s=480.0,
    latency=20_000,
    rate=4_000,
    in_flight=6_000,
    both=2_000,
    fast=10_000,
    plain=150,
    latency_loop=False,
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
    scale = f"{spec(n, 20_000)}, {LATENCY_MS:g} ms, conc {CONCURRENCY}, {shape}"
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
    sim = start_simulator(n, LATENCY_MS, shape=shape)
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


# --- throttled servers: a rate, a window in flight, both ------------------------------------------


def steady_rate(samples: list[tuple[float, int]], total: int) -> float | None:
    """Answers/s between 2 s after the start and 95 % done: the burst and the tail left out."""
    if not samples:
        return None
    start = samples[0][0] + 2.0
    window = [(t, n) for t, n in samples if t >= start and n <= 0.95 * total]
    if len(window) < 2 or window[-1][0] - window[0][0] < 3.0:
        return None
    (t0, n0), (t1, n1) = window[0], window[-1]
    return (n1 - n0) / (t1 - t0)


def bench_limited(
    ctx: Context,
    name: str,
    n: int,
    *,
    share: float,
    share_below: float,
    concurrency: int,
    rate_limit: float = 0.0,
    max_in_flight: int | None = None,
) -> None:
    """A server that answers 429 above a rate, a number in flight, or both; collector `rate = 0`."""
    report, budget = ctx.report, ctx.budget
    bounds = []
    limits = []
    if rate_limit:
        bounds.append(rate_limit)
        limits.append(f"{rate_limit:g}/s bucket")
    if max_in_flight:
        bounds.append(max_in_flight / (FAST_MS / 1000))
        limits.append(f"{max_in_flight} in flight")
    bound = min(bounds)
    shape = shape_in_use(HEADLINE_SHAPE)
    scale = (
        f"{spec(n, None)}, sim {' + '.join(limits)}, {FAST_MS:g} ms, conc {concurrency}, "
        f"rate 0, {shape}"
    )
    want = Target(">=", share * bound, "ok requests/s", f"{share:.0%} of {bound:g}/s")
    few = Target("<", share_below * 100, "% of requests are 429s")
    if not budget.allows(n / bound + 15):
        report.not_run(name + ": throughput", scale, want, "time budget")
        report.not_run(name + ": 429 share", "same run", few, "time budget")
        return
    knobs: dict[str, Any] = {} if max_in_flight is None else {"max_in_flight": max_in_flight}
    try:
        sim = start_simulator(n, FAST_MS, rate_limit=rate_limit, shape=shape, **knobs)
    except Unavailable as exc:
        report.not_available(name + ": throughput", scale, want, str(exc))
        report.not_available(name + ": 429 share", "same run", few, str(exc))
        return
    samples: list[tuple[float, int]] = []

    def sample() -> None:
        samples.append((time.monotonic(), sum(sim.counters.sessions_served.values())))

    try:
        machines = keep_machine_list(sim, ctx.work, "limited")
        child = run_collector(
            ctx.work,
            sim,
            machines,
            budget.cap(3 * n / bound + 30),
            concurrency=concurrency,
            tick=sample,
        )
        total, throttled = data_requests(sim), answered_429s(sim)
        peak = sim.counters.peak_rps
        peak_in_flight = getattr(sim.counters, "peak_in_flight", None) if max_in_flight else None
    finally:
        sim.stop()
    problem = trouble(child, n)
    duration = child.summary.duration_s
    if problem or not duration:
        report.fail(name + ": throughput", scale, str(problem), want)
    else:
        rate = n / duration
        steady = steady_rate(samples, n)
        steady_text = f", steady {steady:.0f}/s" if steady is not None else ""
        report.check(
            name + ": throughput",
            scale,
            f"{rate:.0f} ok requests/s ({n:,} / {duration:.1f} s{steady_text}, peak {peak}/s"
            + (f", {peak_in_flight} in flight)" if max_in_flight else ")"),
            want,
            rate,
            ok_per_s=round(rate, 1),
            peak_in_flight=peak_in_flight,
            steady_per_s=steady,
            peak_rps=peak,
            duration_s=duration,
            cpu_s=round(child.cpu_s, 2),
        )
    percent = 100 * throttled / total if total else 100.0
    report.check(
        name + ": 429 share",
        "same run",
        f"{percent:.2f} % ({throttled:,} of {total:,} requests)",
        few,
        percent,
        throttled=throttled,
        requests=total,
    )


def bench_rate(ctx: Context) -> None:
    bench_limited(ctx, "rate-bound", ctx.sizes.rate, share=0.9, share_below=0.02,
                  concurrency=CONCURRENCY, rate_limit=RATE_LIMIT)  # fmt: skip


def bench_in_flight(ctx: Context) -> None:
    bench_limited(ctx, "in-flight-bound", ctx.sizes.in_flight, share=0.85, share_below=0.03,
                  concurrency=LIMITED_CONCURRENCY, max_in_flight=IN_FLIGHT)  # fmt: skip


def bench_both(ctx: Context) -> None:
    bench_limited(ctx, "both limits", ctx.sizes.both, share=0.85, share_below=0.03,
                  concurrency=LIMITED_CONCURRENCY, rate_limit=BOTH_RATE,
                  max_in_flight=BOTH_IN_FLIGHT)  # fmt: skip


# --- 20 ms, no limit: the plain script, CPU, scattered 429s, memory at 10,000 ---------------


def bench_fast(ctx: Context) -> None:
    """At 20 ms: the seed's script on a sample; the collector and the minimal loop on one list."""
    report, budget, sizes = ctx.report, ctx.budget, ctx.sizes
    n, shape = sizes.fast, shape_in_use(HEADLINE_SHAPE)
    plain_scale = f"{sizes.plain} machines (a sample), {FAST_MS:g} ms, one at a time, {shape}"
    scale = f"{n:,} machines, {FAST_MS:g} ms, conc {CONCURRENCY}, {shape}"
    faster = Target(">=", 40, "x the plain script")
    cpu = Target("<=", 1.3, "x the minimal aiohttp + orjson loop")
    scattered = Target(">=", 70, "% of the same run without them")
    if not budget.allows(60):
        for bench, target in (
            ("vs a plain script", faster),
            ("CPU cost", cpu),
            ("scattered 429s", scattered),
        ):
            report.not_run(bench, scale, target, "time budget")
        return
    sim = start_simulator(n, FAST_MS, shape=shape)
    try:
        machines = keep_machine_list(sim, ctx.work, "fast")
        plain_out = ctx.work / "plain.ndjson"
        plain = run_child(
            [
                sys.executable,
                str(REPO / "benchmarks" / "plain_script.py"),
                "--base-url",
                sim.base_url,
                "--token-url",
                sim.token_url,
                "--customer-id",
                sim.customer_id,
                "--machines",
                str(machines),
                "--out",
                str(plain_out),
                "--limit",
                str(sizes.plain),
            ],
            child_env(sim),
            budget.cap(60),
        )
        plain_out.unlink(missing_ok=True)
        clean = run_collector(ctx.work, sim, machines, budget.cap(90), concurrency=CONCURRENCY)
        minimal = None
        if budget.allows(20):
            minimal = run_minimal(ctx.work, sim, machines, budget.cap(90), CONCURRENCY)
        noisy: Child | None = None
        served_before = sum(sim.counters.sessions_served.values())
        if budget.allows(30) and not trouble(clean, n):
            sim.faults.p_429 = SCATTERED_429  # a live knob: the same site, now with noise
            noisy = run_collector(
                ctx.work,
                sim,
                machines,
                budget.cap(max(30, 3 * clean.wall_s)),
                concurrency=CONCURRENCY,
            )
        served = sum(sim.counters.sessions_served.values()) - served_before
    finally:
        sim.stop()

    plain_rate = plain.summary.rate
    if plain.returncode != 0 or not plain_rate:
        report.fail("plain script (seed)", plain_scale, plain.tail(), "-")
    else:
        report.info(
            "plain script (seed)",
            plain_scale,
            f"{plain_rate:.1f} machines/s (wall {plain.wall_s:.1f} s)",
            machines_per_s=plain_rate,
        )
    problem = trouble(clean, n)
    rate = clean.summary.rate
    if problem or rate is None:
        for bench, target in (
            ("vs a plain script", faster),
            ("CPU cost", cpu),
            ("scattered 429s", scattered),
        ):
            report.fail(bench, scale, str(problem), target)
        return
    ctx.rss_10k = clean.maxrss_mb
    report.info(
        "collector at 20 ms",
        scale,
        f"{rate:.0f} machines/s (wall {clean.wall_s:.1f} s)",
        machines_per_s=rate,
        cpu_s=round(clean.cpu_s, 2),
        peak_rss_mb=round(clean.maxrss_mb, 1),
    )
    if plain_rate:
        report.check(
            "vs a plain script",
            "the two rows above",
            f"{rate / plain_rate:.1f}x ({rate:.0f} / {plain_rate:.1f} machines/s)",
            faster,
            rate / plain_rate,
            ratio=round(rate / plain_rate, 2),
        )
    else:
        report.fail("vs a plain script", "-", "no plain-script figure", faster)
    cpu_row(report, clean, minimal, n, cpu)
    scattered_row(report, clean, noisy, served, n, scattered)
    memory = Target("<=", 150, "MB")
    report.check(
        "memory at 10,000",
        "the collector run above",
        f"peak RSS {clean.maxrss_mb:.0f} MB",
        memory,
        clean.maxrss_mb,
        peak_rss_mb=round(clean.maxrss_mb, 1),
    )


def cpu_row(report: Report, clean: Child, minimal: Child | None, n: int, cpu: Target) -> None:
    per_10k = clean.cpu_s * 10_000 / n
    loop_rate = minimal_row(report, minimal, "same list and simulator (reference)")
    if minimal is None or loop_rate is None:
        report.not_run("CPU cost", "-", cpu, "no minimal-loop figure")
        return
    base_10k = minimal.cpu_s * 10_000 / n
    ratio = per_10k / base_10k if base_10k else math.inf
    report.check(
        "CPU cost",
        "the collector and loop rows above",
        f"{per_10k:.2f} s per 10,000 vs loop {base_10k:.2f} s ({ratio:.2f}x)",
        cpu,
        ratio,
        collector_cpu_s_per_10k=round(per_10k, 2),
        loop_cpu_s_per_10k=round(base_10k, 2),
    )


def scattered_row(
    report: Report, clean: Child, noisy: Child | None, served: int, n: int, target: Target
) -> None:
    """1% random 429s against the clean run: the collector's rate, or the server's if killed."""
    name = f"scattered 429s ({SCATTERED_429:.0%})"
    scale = "the collector run above, random 429s added"
    if noisy is None:
        report.not_run(name, scale, target, "time budget")
        return
    clean_rate = clean.summary.rate or 0.0
    rate, how = noisy.summary.rate, ""
    if noisy.timed_out or rate is None or noisy.returncode != 0:
        rate, how = served / noisy.wall_s, f" (killed after {noisy.wall_s:.0f} s: served/s)"
    percent = 100 * rate / clean_rate if clean_rate else 0.0
    report.check(
        name,
        scale,
        f"{rate:.0f} vs {clean_rate:.0f} machines/s: {percent:.0f} %{how}",
        target,
        percent,
        machines_per_s=round(rate, 1),
        clean_machines_per_s=clean_rate,
        throttled=noisy.summary.throttled,
        exit_code=noisy.returncode,
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
    scale = f"{spec(n, 200_000)}, {FAST_MS:g} ms, conc {CONCURRENCY}, {shape}"
    if not budget.allows(n / 1000 + SITE_WIDE_BIG_RESERVE_S):
        report.not_run(name, scale, memory, "time budget")
        return
    sim = start_simulator(n, FAST_MS, shape=shape)
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
    scale = f"~{sessions:,} sessions ({n:,} machines), {FAST_MS:g} ms, {shape}"
    memory = Target("<=", 150, "MB")
    if not budget.allows(40):
        report.not_run(name, scale, memory, "time budget")
        return
    sim = start_simulator(n, FAST_MS, shape=shape)
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


# --- the run ------------------------------------------------------------------------------------

BENCHES: dict[str, Callable[[Context], None]] = {
    "shapes": bench_shapes,
    "latency": bench_latency,  # and site-wide, on the same site
    "rate": bench_rate,
    "in-flight": bench_in_flight,
    "both": bench_both,
    "fast": bench_fast,  # plain script, CPU cost, scattered 429s, memory at 10,000
    "big": bench_big,  # the 200,000 rows
}

NOTES = [
    "machines/s is each program's own summary figure: from the start of the run (token, /me and"
    " the files included) to its end; interpreter start-up excluded. The wall time of the"
    " subprocess is shown beside it.",
    "requests and 429s are counted by the simulator (token calls left out). ok requests/s ="
    " machines / the collector's duration; 'steady' is the simulator's count of answered"
    " machines between 2 s after the start and 95 % done, leaving out the first burst.",
    "CPU = user + sys seconds of the child process (os.wait4), scaled to 10,000 machines; the"
    " loop is benchmarks/minimal_loop.py (same calls, same record bytes, no retries, journal or"
    " manifest). Peak RSS is the collector child's alone: the simulator runs in the bench's"
    " process.",
    "site-wide: both modes read the same list on the same simulated site; records compared as"
    " multisets with _collected_at and _run_id left out.",
    "The simulator runs in this process on the same cores, so it competes with the collector for"
    " CPU in the 20 ms runs.",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smaller sizes, no 200,000-machine rows (make bench-quick)",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=list(BENCHES),
        metavar="NAME",
        help=f"run only these benches: {', '.join(BENCHES)}",
    )
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown")
    parser.add_argument(
        "--json",
        type=Path,
        metavar="PATH",
        help="where to write every figure (default: benchmarks/results/"
        "latest.json, quick.json with --quick, none with --only)",
    )
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    mode = "quick" if args.quick else "full"
    json_path = args.json
    if json_path is None and not args.only:
        json_path = RESULTS / ("quick.json" if args.quick else "latest.json")

    started = time.monotonic()
    report = Report(notes=list(NOTES))
    print(
        f"benchmarks ({mode}): collector CLI against the simulator, "
        f"{machine_info()['cores']} cores",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="collector-bench-") as tmp:
        ctx = Context(report, Budget(sizes.budget_s), Path(tmp), sizes)
        for name, bench in BENCHES.items():
            if args.only and name not in args.only:
                continue
            print(f"  running {name} ...", flush=True)
            bench(ctx)
    if args.quick:
        report.notes.append("--quick: smaller sizes; the 200,000-machine rows are not run.")
    elapsed = time.monotonic() - started
    machine = machine_info()
    print(render_markdown(report) if args.markdown else render_text(report))
    print(machine_line(machine))
    print(f"bench time: {elapsed:.0f} s ({mode})")
    if json_path is not None:
        write_json(json_path, document(report, machine, mode, elapsed))
        print(f"figures written to {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
