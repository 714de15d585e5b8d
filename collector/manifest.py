"""The run's manifest: counts and checksums of the whole run, every segment of it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from collector import __version__
from collector.config import Config, Mode, public_dict
from collector.journal import JournalState
from collector.models import Failure
from collector.pipeline import utc_now
from collector.redact import redact_values


def build_manifest(
    *,
    state: JournalState,
    config: Config,
    segment_started_at: str,
    failures: Sequence[Failure],
    pacing: tuple[float, int] | None = None,
) -> dict[str, Any]:
    """The manifest of the whole run, from the journal's state once the last segment ended.

    Every count covers every segment: `state.counters` folds them (`journal.fold_counters`).
    """
    failed: dict[str, int] = {}
    for failure in failures:
        failed[failure.kind.value] = failed.get(failure.kind.value, 0) + 1
    manifest = {
        "run_id": state.run_id,
        "version": __version__,
        "started_at": state.started_at,
        "segment_started_at": segment_started_at,
        "finished_at": utc_now(),
        "complete": state.complete,
        "mode": config.collect.mode.value,
        "config": redact_values(public_dict(config)),  # a secret in a URL, say
        "counts": {
            "machines_total": state.machines_committed + sum(failed.values()),
            "machines_ok": state.machines_committed,
            "machines_failed": failed,
            "duplicates_dropped": state.counters.get("duplicates", 0),
            "sessions": state.records,
            "requests": state.counters.get("requests", 0),
            "retries": state.counters.get("retries", 0),
            "throttled": state.counters.get("throttled", 0),
            "segments": state.segments,
        },
        "files": [f.to_json() for f in state.files],
    }
    if pacing is not None:
        # Where the adaptive rate (0: no limit) and window stood when the last segment ended.
        rate, window = pacing
        manifest["pacing"] = {"rate": round(rate, 1), "window": window}
    if config.collect.mode is Mode.SITE_WIDE:
        # The page calls of the committed listings (SPEC 5.5); the requests count them too.
        manifest["listing"] = {
            "session_pages": state.counters.get("session_pages", 0),
            "machine_pages": state.counters.get("machine_pages", 0),
        }
    return manifest
