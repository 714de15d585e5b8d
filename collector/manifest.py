"""The run's manifest: counts and checksums of the whole run, from the journal on disk."""

from __future__ import annotations

from typing import Any

from collector import __version__
from collector.config import Config, Mode, public_dict
from collector.journal import JournalState
from collector.models import Failure, RunStats
from collector.pipeline import utc_now


def build_manifest(
    *,
    state: JournalState,
    config: Config,
    stats: RunStats,
    complete: bool,
    started_at: str,
    failures: list[Failure],
) -> dict[str, Any]:
    """The manifest of the whole run (every segment), from its journal as read back."""
    failed: dict[str, int] = {}
    for failure in failures:
        failed[failure.kind.value] = failed.get(failure.kind.value, 0) + 1
    manifest = {
        "run_id": state.run_id,
        "version": __version__,
        "started_at": state.started_at,
        "segment_started_at": started_at,
        "finished_at": utc_now(),
        "complete": complete,
        "mode": config.collect.mode.value,
        "config": public_dict(config),
        "counts": {
            "machines_total": len(state.committed) + sum(failed.values()),
            "machines_ok": len(state.committed),
            "machines_failed": failed,
            "duplicates_dropped": stats.duplicates,
            "sessions": state.records,
            "requests": state.counters.get("requests", 0),
            "retries": state.counters.get("retries", 0),
            "throttled": state.counters.get("throttled", 0),
            "segments": state.segments,
        },
        "files": [f.to_manifest() for f in state.files if f.name],
    }
    if config.collect.mode is Mode.SITE_WIDE:
        # The page calls of the committed listings (SPEC 5.5); the requests count them too.
        manifest["listing"] = {
            "session_pages": state.counters.get("session_pages", 0),
            "machine_pages": state.counters.get("machine_pages", 0),
        }
    return manifest
