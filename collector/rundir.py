"""The output directory of a run: what it holds, and what this invocation may do with it.

A directory holding another run is refused unless `--resume`, `--retry-failed` or
`--overwrite` says what to do with it. Resuming checks that the configuration still collects
the same thing (same machine list, mode, shard and record shape) and removes what a crash
left behind: `.part` files, and session files renamed but never journaled (the crash came
between the rename and the journal append; their machines are collected again).
"""

from __future__ import annotations

import contextlib
import enum
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collector.errors import ConfigError, OutputError
from collector.journal import JOURNAL_NAME, JournalState, read_journal
from collector.sinks import ERRORS_NAME, MANIFEST_NAME, PART, describe_os_error

log = logging.getLogger("collector.rundir")

# Fingerprint keys that change which machines are collected, or the shape of their records.
SHAPE_KEYS = ("fields", "separator", "arrays", "compress")


class Action(enum.StrEnum):
    FRESH = "fresh"
    RESUME = "resume"
    RETRY_FAILED = "retry-failed"


@dataclass(frozen=True, slots=True)
class RunPlan:
    """What to do in the directory: start fresh, or continue `state`."""

    directory: Path
    action: Action
    state: JournalState | None


def is_run_file(name: str) -> bool:
    return (
        name.startswith("sessions-")
        or name in (JOURNAL_NAME, ERRORS_NAME, MANIFEST_NAME)
        or name.endswith(PART)
    )


def run_files(directory: Path) -> list[Path]:
    try:
        return sorted(p for p in directory.iterdir() if p.is_file() and is_run_file(p.name))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise OutputError(f"cannot read the output directory {directory}: {exc.strerror}") from exc


def fingerprint_differences(
    old: dict[str, Any], new: dict[str, Any], keys: tuple[str, ...]
) -> list[str]:
    return [
        f"{key}: {old.get(key)!r} then, {new.get(key)!r} now"
        for key in keys
        if old.get(key) != new.get(key)
    ]


def plan_run(
    directory: Path,
    *,
    resume: bool,
    retry_failed: bool,
    overwrite: bool,
    fingerprint: dict[str, Any],
) -> RunPlan:
    """Decide how to use `directory`, cleaning what a crash left behind.

    Raises `ConfigError` if the directory holds another run and no flag says what to do, if
    `--retry-failed` finds no run, or if `--resume` would collect something else; the message
    names the directory and the flag to use. Raises `OutputError` if it cannot be created.
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(describe_os_error(exc, directory)) from exc
    existing = run_files(directory)
    if overwrite:
        for path in existing:
            try:
                path.unlink()
            except OSError as exc:
                raise OutputError(describe_os_error(exc, path)) from exc
        return RunPlan(directory, Action.FRESH, None)
    state = read_journal(directory)
    if state is None:
        if retry_failed:
            raise ConfigError(
                f"{directory} holds no run to retry; run without --retry-failed first"
            )
        if existing:
            raise ConfigError(
                f"{directory} holds files of another tool or an unjournaled run "
                f"({existing[0].name}, ...); choose an empty directory or pass --overwrite"
            )
        if resume:
            log.info("nothing to resume in %s: starting a new run", directory)
        return RunPlan(directory, Action.FRESH, None)
    if not (resume or retry_failed):
        raise ConfigError(
            f"{directory} holds run {state.run_id} (started {state.started_at}); pass --resume to "
            "continue it, --retry-failed to collect its failed machines again, --overwrite to "
            "replace it, or choose another --out directory"
        )
    keys = SHAPE_KEYS if retry_failed else tuple(sorted(set(fingerprint) | set(state.fingerprint)))
    differences = fingerprint_differences(state.fingerprint, fingerprint, keys)
    if differences:
        flag = "--retry-failed" if retry_failed else "--resume"
        raise ConfigError(
            f"cannot {flag} run {state.run_id} in {directory}: the configuration now collects "
            f"something else ({'; '.join(differences)}); restore it, or choose another --out "
            "directory"
        )
    remove_leftovers(directory, state)
    return RunPlan(directory, Action.RETRY_FAILED if retry_failed else Action.RESUME, state)


def remove_leftovers(directory: Path, state: JournalState) -> None:
    """Delete `.part` files and session files the journal does not list."""
    listed = {f.name for f in state.files if f.name}
    for path in run_files(directory):
        orphan = path.name.startswith("sessions-") and not path.name.endswith(PART)
        if path.name.endswith(PART) or (orphan and path.name not in listed):
            log.info("removing %s, left by an interrupted run", path.name)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
