"""What an operator sees: a progress bar (or a log line every 10 s) and the summary.

Everything here only reads `RunStats`; nothing calls back into the pipeline. Output goes to
standard error, never to standard output, which may be carrying records.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TextIO

import anyio

from collector.models import RunStats

log = logging.getLogger("collector.progress")

LOG_INTERVAL_S = 10.0


@dataclass(slots=True)
class RateMeter:
    """Requests per second over the last interval, from the running request count."""

    last_count: int = 0
    last_time: float = 0.0
    rate: float = 0.0

    def update(self, count: int, now: float) -> float:
        if self.last_time and now > self.last_time:
            self.rate = (count - self.last_count) / (now - self.last_time)
        self.last_count, self.last_time = count, now
        return self.rate


@dataclass(slots=True)
class ListingProgress:
    """How far a site-wide listing is (SPEC 5.5): sessions seen of those expected (the pages
    read are `RunStats` counters, journaled with the run's other counts).

    `sessions_expected` is the sum of the machines' `SessionCount` from the machine listing
    (or a page's `TotalItems`), None until known: it gives the bar its total and its ETA.
    """

    sessions_seen: int = 0
    sessions_expected: int | None = None

    def text(self, stats: RunStats) -> str:
        of = f"/{self.sessions_expected}" if self.sessions_expected is not None else ""
        return (
            f"pages {stats.session_pages} of sessions and {stats.machine_pages} of machines, "
            f"sessions listed {self.sessions_seen}{of}"
        )


class ProgressReporter:
    """Shows progress while `run()` is running; cancel it to stop."""

    def __init__(
        self,
        stats: RunStats,
        *,
        total: Callable[[], int | None],
        interactive: bool,
        stream: TextIO | None = None,
        listing: ListingProgress | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self.clock, self.sleep = clock, sleep
        self.stats = stats
        self.listing = listing
        self.total = total
        self.interactive = interactive
        self.stream = stream or sys.stderr
        self.meter = RateMeter()

    def line(self) -> str:
        s = self.stats
        total = self.total()
        of = f"/{total}" if total is not None else ""
        pages = f"{self.listing.text(self.stats)}, " if self.listing is not None else ""
        return (
            f"{pages}machines {s.machines_done}{of} (ok {s.machines_ok}, "
            f"failed {s.machines_failed}), sessions {s.sessions}, requests {s.requests} "
            f"({self.meter.rate:.1f}/s), 429s {s.throttled}, retries {s.retries}, {pacing(s)}"
        )

    def bar_position(self) -> tuple[int, int | None, str]:
        """(done, total, unit) of the bar: sessions listed in site-wide mode, else machines."""
        if self.listing is not None:
            return self.listing.sessions_seen, self.listing.sessions_expected, "sessions listed"
        return self.stats.machines_done, self.total(), "machines"

    async def run(self) -> None:
        # The count at the start, so the first line's rate covers its first interval (unprimed,
        # the first line said 0.0/s however fast the run went).
        self.meter.update(self.stats.requests, self.clock())
        if self.interactive:
            await self._run_bar()
        else:
            await self._run_log()

    async def _run_log(self) -> None:
        while True:
            await self.sleep(LOG_INTERVAL_S)
            self.meter.update(self.stats.requests, self.clock())
            log.info("progress: %s", self.line())

    async def _run_bar(self) -> None:
        # Imported here: rich costs about 0.1 s of CPU at start-up, and only the bar needs it.
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        console = Console(file=self.stream, stderr=True)
        columns = (
            BarColumn(bar_width=16),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=console, transient=True, redirect_stdout=False) as bar:
            task = bar.add_task("collect", total=self.bar_position()[1], detail="")
            while True:
                rate = self.meter.update(self.stats.requests, self.clock())
                s = self.stats
                done, total, unit = self.bar_position()
                bar.update(
                    task,
                    completed=done,
                    total=total,
                    detail=(
                        f"{unit}, {s.sessions} sessions, {rate:.0f} req/s, "
                        f"{s.throttled} 429s, {s.machines_failed} failed, {pacing(s)}"
                    ),
                )
                await self.sleep(0.5)


def pacing(stats: RunStats) -> str:
    """The pacer's current rate (or "no rate limit") and window, for the progress line."""
    rate = f"rate {stats.current_rate:.0f}/s" if stats.current_rate else "no rate limit"
    return f"{rate}, window {stats.current_window}"


def summary_lines(
    stats: RunStats, *, duration_s: float, output: str, complete: bool, exit_code: int
) -> list[str]:
    """The end-of-run summary, one line a fact."""
    failed = ", ".join(f"{kind} {n}" for kind, n in sorted(stats.failed.items())) or "none"
    throughput = stats.machines_done / duration_s if duration_s > 0 else 0.0
    lines = [
        "collector run " + ("finished" if complete else "stopped before the end"),
        f"  machines ok      {stats.machines_ok}",
        f"  machines failed  {stats.machines_failed} ({failed})",
    ]
    if stats.machines_skipped:
        lines.append(f"  already done     {stats.machines_skipped} (committed by an earlier run)")
    lines += [
        f"  duplicates       {stats.duplicates} dropped",
        f"  sessions         {stats.sessions}",
        f"  requests         {stats.requests} ({stats.retries} retries, {stats.throttled} 429s, "
        f"{stats.token_requests} token calls)",
        f"  pacing at end    {pacing(stats)}",
        f"  duration         {duration_s:.1f} s ({throughput:.1f} machines/s)",
        f"  output           {output}",
        f"  exit code        {exit_code}",
    ]
    return lines


def print_summary(lines: list[str], stream: TextIO | None = None) -> None:
    out = stream or sys.stderr
    print("\n".join(lines), file=out, flush=True)
