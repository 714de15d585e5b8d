"""The output directory of a run: who may use it, what this invocation may do, and its ledger.

One run at a time: `lock_directory` takes an exclusive `flock` on `.collector.lock` before
anything else touches the directory and holds it until the run ends; the kernel drops the lock
of a dead process, so there is no stale lock to clean. `plan_run` then decides, reading only:
a directory holding another run is refused unless `--resume`, `--retry-failed` or
`--overwrite` says what to do with it, and resuming checks that the configuration still
collects the same thing (same machine list, mode, shard and record shape). Nothing is deleted
until `RunLedger.open`, which the run calls once the credentials and the site are proven: the
old run of `--overwrite`, or what a crash left behind (`.part` files, and session files
renamed but never journaled, whose machines are collected again).

`RunLedger` is the one writer of a directory run: the journal, the session files, the error
log and, at the end, the manifest.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import fcntl
import logging
import os
import uuid
from collections.abc import Callable, Container, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collector import __version__
from collector.config import Config
from collector.digests import DigestSet
from collector.errors import ConfigError, OutputError
from collector.journal import JOURNAL_NAME, Journal, JournalState, read_journal
from collector.manifest import build_manifest
from collector.models import ErrorKind, Failure, RunStats, key_digest
from collector.pipeline import utc_now
from collector.sinks import (
    ERRORS_NAME,
    MANIFEST_NAME,
    PART,
    DirectorySink,
    ErrorLog,
    MachineKeys,
    SessionFile,
    SessionFiles,
    describe_os_error,
    dump_json,
    private_opener,
    read_errors,
    write_atomic,
)

log = logging.getLogger("collector.rundir")

LOCK_NAME = ".collector.lock"  # not a run file: --overwrite keeps it, verify ignores it
# Records hold personal data: the group may read the directory (a loader), others nothing.
DIRECTORY_MODE = 0o750

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
    fingerprint: dict[str, Any]
    stale: tuple[Path, ...] = ()  # deleted by RunLedger.open: an old run, or a crash's leftovers
    failures: tuple[Failure, ...] = ()  # the errors.ndjson of the run continued

    @property
    def committed(self) -> DigestSet:
        return self.state.committed if self.state else DigestSet()


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


@contextlib.contextmanager
def lock_directory(directory: Path) -> Iterator[None]:
    """Hold the exclusive lock of `directory` (created `DIRECTORY_MODE` if missing) while inside.

    Raises `OutputError` (exit 3) if another process holds it, naming the directory and that
    process's pid, or if the directory cannot be created.
    """
    path = directory / LOCK_NAME
    try:
        directory.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
        fd = private_opener(str(path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC)
    except OSError as exc:
        raise OutputError(describe_os_error(exc, path)) from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise OutputError(f"cannot lock {path}: {exc.strerror}") from exc
            raise OutputError(
                f"{directory} is in use by another collector run ({holder(fd)}); wait for it "
                "to end, or choose another --out directory"
            ) from exc
        # The pid is for the message above only: the lock itself is the kernel's.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def holder(fd: int) -> str:
    """`pid N` as the lock file says, or a plain description while it is still being written."""
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return f"pid {text}" if text.isdigit() else "pid not yet written"


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
    """Decide how to use `directory` (which exists and is locked); it deletes nothing.

    Raises `ConfigError` if the directory holds another run and no flag says what to do, if
    `--retry-failed` finds no run, or if `--resume` would collect something else; the message
    names the directory and the flag to use. Raises `OutputError` if the journal is damaged
    before its last line.
    """
    existing = run_files(directory)
    if overwrite:
        return RunPlan(directory, Action.FRESH, None, fingerprint, stale=tuple(existing))
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
        return RunPlan(directory, Action.FRESH, None, fingerprint)
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
    return RunPlan(
        directory,
        Action.RETRY_FAILED if retry_failed else Action.RESUME,
        state,
        state.fingerprint,
        stale=tuple(leftovers(existing, state)),
        failures=tuple(read_errors(directory / ERRORS_NAME)),
    )


def leftovers(paths: Sequence[Path], state: JournalState) -> list[Path]:
    """The `.part` files, and the session files the journal does not list."""
    listed = {f.name for f in state.files}
    return [
        p
        for p in paths
        if p.name.endswith(PART) or (p.name.startswith("sessions-") and p.name not in listed)
    ]


def kept_failures(
    earlier: Sequence[Failure], new: Sequence[Failure], committed: Container[bytes], *, reread: bool
) -> list[Failure]:
    """The failures of earlier segments still standing: not collected, not failed again now.

    `committed` holds the `key_digest` of each committed machine.

    With `reread` (a resume reads the input again) earlier bad input lines are reported anew.
    """
    retried = {key_digest(f.machine) for f in new}
    return [
        f
        for f in earlier
        if key_digest(f.machine) not in committed
        and key_digest(f.machine) not in retried
        and not (reread and f.kind is ErrorKind.INVALID_INPUT)
    ]


def segment_counters(stats: RunStats) -> dict[str, int]:
    """What one segment adds to the run's counts (see `journal.fold_counters`)."""
    return {
        "requests": stats.requests,
        "retries": stats.retries,
        "throttled": stats.throttled,
        "token_requests": stats.token_requests,
        "duplicates": stats.duplicates,
        "session_pages": stats.session_pages,
        "machine_pages": stats.machine_pages,
    }


@dataclass(frozen=True, slots=True)
class Finished:
    """How finishing a run went: the failures standing, the manifest, the first write error."""

    failures: int
    manifest: dict[str, Any] | None
    error: OutputError | None
    complete: bool


def attempt(step: Callable[[], None], problems: list[OutputError]) -> bool:
    """Run one step of finishing a run; an `OutputError` is kept, so the later steps still run."""
    try:
        step()
    except OutputError as exc:
        problems.append(exc)
        return False
    return True


class RunLedger:
    """The one writer of a run directory, from the journal's first line to the manifest.

    `open` starts (or continues) the run its plan describes; `sink` is where the pipeline
    writes; `commit` journals a unit of work once its files are renamed; `finish` ends it.
    The journal's state is kept in memory as lines are appended, never read back.
    """

    def __init__(
        self, plan: RunPlan, state: JournalState, journal: Journal, config: Config, started_at: str
    ) -> None:
        self.plan = plan
        self.state = state
        self.journal = journal
        self.config = config
        self.started_at = started_at
        output = config.output
        self.files = SessionFiles(
            plan.directory,
            compress=output.compress,
            max_records=output.max_records_per_file,
            next_number=state.next_file_number,
        )
        self.errors = ErrorLog(plan.directory / ERRORS_NAME, staged=True)
        self.sink = DirectorySink(self.files, self.errors, self)
        # The machines of earlier failures, and those of them this run committed: the only
        # committed machines held beyond the count, so memory does not grow with the list.
        self.watched = {key_digest(f.machine) for f in plan.failures}
        self.settled: set[bytes] = set()

    @classmethod
    def open(cls, plan: RunPlan, *, config: Config, started_at: str) -> RunLedger:
        """Delete what the plan replaces, then journal the start of this segment.

        Raises `OutputError` if a file cannot be deleted or the journal cannot be written.
        """
        for path in plan.stale:
            log.info(
                "removing %s (%s)",
                path.name,
                "--overwrite" if plan.state is None else "left by an interrupted run",
            )
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                raise OutputError(describe_os_error(exc, path)) from exc
        if plan.state is None:
            state = JournalState(str(uuid.uuid4()), started_at, plan.fingerprint)
            journal = Journal(plan.directory)
            start = {"t": "start", "run_id": state.run_id, "version": __version__}
            journal.append(start | {"started_at": started_at, "fingerprint": plan.fingerprint})
        else:
            state = plan.state
            journal = Journal(plan.directory, length=state.length)
            journal.append({"t": plan.action.value, "at": started_at})
            state.complete = False
        return cls(plan, state, journal, config, started_at)

    @property
    def run_id(self) -> str:
        return self.state.run_id

    def commit(self, files: Sequence[SessionFile], machines: MachineKeys) -> None:
        """Journal that `machines` are in `files` (already renamed and durable)."""
        self.journal.append_commit(files, machines, utc_now())
        self.state.count_commit(files, machines)
        if self.watched:  # an earlier failure this run has now collected
            self.settled.update(d for d in map(key_digest, machines.keys()) if d in self.watched)

    def finish(self, *, complete: bool, abandon: bool, stats: RunStats) -> Finished:
        """Commit what was collected (unless `abandon`), then errors, journal end, manifest.

        Every step is tried; a run whose finishing failed is not complete. Raises nothing:
        the first `OutputError` is returned.
        """
        problems: list[OutputError] = []
        if abandon or not attempt(self.sink.flush, problems):
            self.files.abandon()
        reread = self.plan.action is Action.RESUME  # the input was read again
        new = self.errors.failures
        kept = [
            f
            for f in kept_failures(self.plan.failures, new, self.state.committed, reread=reread)
            if key_digest(f.machine) not in self.settled
        ]
        attempt(lambda: self.errors.finish(kept), problems)
        counters = segment_counters(stats)
        ended = complete and not problems
        end = {"t": "end", "at": utc_now(), "complete": ended, "counters": counters}
        if not attempt(lambda: self.journal.append(end), problems):
            ended = False
        attempt(self.journal.close, problems)
        self.state.add_end(ended, counters)
        failures = [*kept, *new]
        manifest = build_manifest(
            state=self.state,
            config=self.config,
            segment_started_at=self.started_at,
            failures=failures,
            pacing=(stats.current_rate, stats.current_window),
        )
        path = self.plan.directory / MANIFEST_NAME
        attempt(lambda: write_atomic(path, dump_json(manifest)), problems)
        error = problems[0] if problems else None
        return Finished(len(failures), manifest, error, self.state.complete)
