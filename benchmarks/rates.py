"""The throughput benches at 20 ms: throttled servers (a rate, a window in flight, both), then
the unthrottled server: the seed's plain script, the CPU cost against the minimal loop and
the memory at 10,000. Random 429s have their own longer runs (`noise.py`).
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.context import (
    BOTH_IN_FLIGHT,
    BOTH_RATE,
    CONCURRENCY,
    FAST_MS,
    HEADLINE_SHAPE,
    IN_FLIGHT,
    LATENCY_SPREAD,
    LIMITED_CONCURRENCY,
    RATE_LIMIT,
    Context,
    keep_machine_list,
    mean_ms,
    minimal_row,
    spec,
)
from benchmarks.harness import (
    REPO,
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
from benchmarks.report import Report, Target

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
        f"{spec(n, None)}, sim {' + '.join(limits)}, {mean_ms(FAST_MS)}, conc {concurrency}, "
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
        sim = start_simulator(
            n, FAST_MS, spread=LATENCY_SPREAD, rate_limit=rate_limit, shape=shape,
            prerender=True, **knobs,
        )  # fmt: skip
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
        ceiling = None
        if max_in_flight and not rate_limit and budget.allows(n / bound + 15):
            # What this host allows: the minimal loop keeping exactly the limit in flight.
            ceiling = run_minimal(ctx.work, sim, machines, budget.cap(3 * n / bound + 30),
                                  max_in_flight)  # fmt: skip
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
        steady_text += pacing_text(child)
        report.check(
            name + ": throughput",
            scale,
            f"{rate:.0f} ok requests/s ({n:,} / {duration:.1f} s{steady_text}, peak {peak}/s"
            + (f", {peak_in_flight} in flight)" if max_in_flight else ")"),
            want,
            rate,
            ok_per_s=round(rate, 1),
            peak_in_flight=peak_in_flight,
            end_rate=child.summary.end_rate,
            end_window=child.summary.end_window,
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
    if max_in_flight and not rate_limit:
        minimal_row(report, ceiling, f"conc {max_in_flight}, same simulator (what the host allows)")


def pacing_text(child: Child) -> str:
    """`, ends at 196/s, window 6`: where the collector's pacing settled, if it says."""
    s = child.summary
    if s.end_window is None:
        return ""
    rate = f"{s.end_rate:.0f}/s" if s.end_rate else "no rate limit"
    return f", ends at {rate}, window {s.end_window}"


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


# --- 20 ms, no limit: the plain script, CPU, memory at 10,000 ---------------------------------


def bench_fast(ctx: Context) -> None:
    """At 20 ms: the seed's script on a sample; the collector and the minimal loop on one list."""
    report, budget, sizes = ctx.report, ctx.budget, ctx.sizes
    n, shape = sizes.fast, shape_in_use(HEADLINE_SHAPE)
    plain_scale = f"{sizes.plain} machines (a sample), {mean_ms(FAST_MS)}, one at a time, {shape}"
    scale = f"{n:,} machines, {mean_ms(FAST_MS)}, conc {CONCURRENCY}, {shape}"
    faster = Target(">=", 40, "x the plain script")
    cpu = Target("<=", 1.3, "x the minimal aiohttp + orjson loop")
    if not budget.allows(60):
        for bench, target in (("vs a plain script", faster), ("CPU cost", cpu)):
            report.not_run(bench, scale, target, "time budget")
        return
    sim = start_simulator(n, FAST_MS, spread=LATENCY_SPREAD, shape=shape, prerender=True)
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
        clean_out, loop_out = ctx.work / "out-fast", ctx.work / "minimal-fast.ndjson"
        clean = run_collector(
            ctx.work, sim, machines, budget.cap(90), concurrency=CONCURRENCY, out=clean_out
        )
        minimal = None
        if budget.allows(20):
            minimal = run_minimal(ctx.work, sim, machines, budget.cap(90), CONCURRENCY, loop_out)
        same = same_records(clean_out, loop_out)
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
        for bench, target in (("vs a plain script", faster), ("CPU cost", cpu)):
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
    cpu_row(report, clean, minimal, n, cpu, same)
    memory = Target("<=", 150, "MB")
    report.check(
        f"memory at {n:,}",
        "the collector run above",
        f"peak RSS {clean.maxrss_mb:.0f} MB",
        memory,
        clean.maxrss_mb,
        peak_rss_mb=round(clean.maxrss_mb, 1),
    )


def same_records(collector_out: Path, loop_out: Path) -> bool | None:
    """Whether the collector and the loop wrote the same records (None: one of them is missing).

    Both outputs are deleted: the CPU comparison is fair only if the bytes written are the same.
    """
    try:
        if not loop_out.exists() or not collector_out.exists():
            return None
        with loop_out.open("rb") as handle:
            return record_keys(output_lines(collector_out)) == record_keys(handle)
    finally:
        shutil.rmtree(collector_out, ignore_errors=True)
        loop_out.unlink(missing_ok=True)


def cpu_row(
    report: Report, clean: Child, minimal: Child | None, n: int, cpu: Target, same: bool | None
) -> None:
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
        f"{per_10k:.2f} s per 10,000 vs loop {base_10k:.2f} s ({ratio:.2f}x), "
        + {True: "same records", False: "records DIFFER", None: "records not compared"}[same],
        cpu,
        ratio,
        same_records=same,
        collector_cpu_s_per_10k=round(per_10k, 2),
        loop_cpu_s_per_10k=round(base_10k, 2),
    )
