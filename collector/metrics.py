"""The run's Prometheus metrics, for a node exporter's textfile collector (`--metrics-file`).

Built with prometheus_client on a registry of its own (never the process-wide default, so two
runs in one process do not share series) and written with `write_to_textfile`, which writes a
temporary file and renames it. Everything here only reads `RunStats`.
"""

from __future__ import annotations

import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

from collector.errors import OutputError
from collector.models import RunStats

PREFIX = "collector"


def build_registry(
    stats: RunStats, *, duration_s: float, exit_code: int, complete: bool, now: float | None = None
) -> CollectorRegistry:
    """A registry holding the run's series as gauges (a textfile is one sample, not a counter)."""
    registry = CollectorRegistry(auto_describe=True)
    rows: list[tuple[str, str, float]] = [
        ("machines_ok", "Machines collected.", stats.machines_ok),
        ("sessions", "Sessions written.", stats.sessions),
        ("requests", "HTTP requests made.", stats.requests),
        ("retries", "Requests retried.", stats.retries),
        ("throttled", "429 answers received.", stats.throttled),
        ("duplicates", "Duplicate machines dropped.", stats.duplicates),
        ("duration_seconds", "Run duration.", round(duration_s, 3)),
        ("exit_code", "Exit code of the run.", exit_code),
        ("complete", "1 if the run reached its end.", int(complete)),
        ("last_run_timestamp_seconds", "When the run ended.", now or time.time()),
        ("rate_requests_per_second", "Request rate the limiter allowed last.", stats.current_rate),
        ("window_in_flight", "Requests the limiter allowed in flight last.", stats.current_window),
    ]
    for name, help_text, value in rows:
        Gauge(f"{PREFIX}_{name}", help_text, registry=registry).set(value)
    failed = Gauge(
        f"{PREFIX}_machines_failed", "Machines that failed, by kind.", ["kind"], registry=registry
    )
    for kind, count in sorted(stats.failed.items()):
        failed.labels(kind=kind).set(count)
    return registry


def write_metrics(
    path: Path, stats: RunStats, *, duration_s: float, exit_code: int, complete: bool
) -> None:
    """Write the run's metrics to `path`, whole (by rename).

    Raises `OutputError` naming the file if it cannot be written.
    """
    registry = build_registry(stats, duration_s=duration_s, exit_code=exit_code, complete=complete)
    try:
        write_to_textfile(str(path), registry)
    except OSError as exc:
        raise OutputError(
            f"cannot write the metrics file {path}: {exc.strerror or exc}; check --metrics-file"
        ) from exc
