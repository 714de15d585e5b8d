"""The output directory: its lock, what a run may do with it, and the ledger that writes it."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from collector.config import Config, OutputConfig
from collector.errors import ConfigError, OutputError
from collector.journal import Journal, commit_entry, read_journal
from collector.models import ErrorKind, Failure, RunStats, key_digest
from collector.rundir import (
    LOCK_NAME,
    Action,
    RunLedger,
    RunPlan,
    kept_failures,
    lock_directory,
    plan_run,
    run_files,
)
from collector.sinks import MachineKeys, SessionFile

FINGERPRINT: dict[str, Any] = {"machines": "m.txt", "mode": "per-machine", "separator": "."}
CONFIG = Config(output=OutputConfig(max_records_per_file=2))


def write_run(directory: Path, fingerprint: dict[str, Any] = FINGERPRINT) -> None:
    directory.mkdir(exist_ok=True)
    journal = Journal(directory)
    journal.append({"t": "start", "run_id": "r1", "started_at": "t0", "fingerprint": fingerprint})
    journal.append(
        commit_entry([SessionFile("sessions-00001.ndjson", 1, 3, "h")], MachineKeys.of(["a"]), "t1")
    )
    journal.close()
    (directory / "sessions-00001.ndjson").write_text("{}\n")


def plan(directory: Path, **flags: Any) -> RunPlan:
    options = {"resume": False, "retry_failed": False, "overwrite": False} | flags
    return plan_run(directory, fingerprint=FINGERPRINT, **options)


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name != LOCK_NAME)


def failure(machine: str, kind: ErrorKind = ErrorKind.SERVER_ERROR) -> Failure:
    return Failure(machine, kind, 500, "x", 1, "tx", "t")


class TestLock:
    def test_a_new_directory_is_created_private(self, tmp_path: Path) -> None:
        """A missing directory is created 0o750 under umask 022, its lock file at most 0o660."""
        out = tmp_path / "new" / "out"
        old = os.umask(0o022)
        try:
            with lock_directory(out):
                pass
        finally:
            os.umask(old)

        assert stat.S_IMODE(out.stat().st_mode) == 0o750
        assert stat.S_IMODE((out / LOCK_NAME).stat().st_mode) & ~0o660 == 0

    def test_a_second_holder_is_refused_naming_the_first_pid(self, tmp_path: Path) -> None:
        """While one lock is held, another on the same directory fails with its path and pid."""
        with (
            lock_directory(tmp_path),
            pytest.raises(OutputError, match=rf"{tmp_path} is in use .*\(pid {os.getpid()}\)"),
            lock_directory(tmp_path),
        ):
            pass

    def test_the_lock_is_released_at_the_end(self, tmp_path: Path) -> None:
        """Once the holder is done (or dead: the kernel closes its files) the next run may lock."""
        with lock_directory(tmp_path):
            pass
        with lock_directory(tmp_path):
            assert (tmp_path / LOCK_NAME).read_text() == f"{os.getpid()}\n"

    def test_the_lock_file_is_not_a_run_file(self, tmp_path: Path) -> None:
        """The lock file alone does not make the directory hold a run."""
        with lock_directory(tmp_path):
            assert run_files(tmp_path) == []
            assert plan(tmp_path).action is Action.FRESH


class TestPlan:
    def test_another_run_is_refused_without_a_flag(self, tmp_path: Path) -> None:
        """A directory holding a run is refused, naming the run and the flags that continue it."""
        write_run(tmp_path)

        with pytest.raises(ConfigError, match=r"holds run r1 .*--resume.*--retry-failed"):
            plan(tmp_path)

    def test_resume_plans_to_remove_parts_and_orphans_only(self, tmp_path: Path) -> None:
        """Resume marks .part files and unjournaled session files stale, deleting nothing yet."""
        write_run(tmp_path)
        (tmp_path / "sessions-00002.ndjson.part").write_text("{")
        (tmp_path / "sessions-00002.ndjson").write_text("{}\n")  # renamed, never journaled

        result = plan(tmp_path, resume=True)

        assert result.action is Action.RESUME
        assert set(result.committed) == {key_digest("a")}
        assert sorted(p.name for p in result.stale) == [
            "sessions-00002.ndjson",
            "sessions-00002.ndjson.part",
        ]
        assert len(listing(tmp_path)) == 4

    def test_resume_with_another_machine_list_is_refused(self, tmp_path: Path) -> None:
        """Resuming with a configuration that collects something else names what changed."""
        write_run(tmp_path, FINGERPRINT | {"machines": "other.txt"})

        with pytest.raises(ConfigError, match=r"machines: 'other\.txt' then, 'm\.txt' now"):
            plan(tmp_path, resume=True)

    def test_retry_failed_needs_a_run(self, tmp_path: Path) -> None:
        """--retry-failed in an empty directory says there is nothing to retry."""
        with pytest.raises(ConfigError, match="holds no run to retry"):
            plan(tmp_path, retry_failed=True)

    def test_resume_in_an_empty_directory_starts_fresh(self, tmp_path: Path) -> None:
        """A nightly job may always pass --resume: with nothing to resume, the run starts fresh."""
        assert plan(tmp_path, resume=True).action is Action.FRESH

    def test_overwrite_deletes_nothing_until_the_ledger_opens(self, tmp_path: Path) -> None:
        """--overwrite only plans: the old run stays whole until the credentials are proven."""
        write_run(tmp_path)
        (tmp_path / "notes.txt").write_text("mine")

        result = plan(tmp_path, overwrite=True)

        assert result.action is Action.FRESH
        assert sorted(p.name for p in result.stale) == ["journal.ndjson", "sessions-00001.ndjson"]
        assert listing(tmp_path) == ["journal.ndjson", "notes.txt", "sessions-00001.ndjson"]

    def test_foreign_session_files_without_journal_are_refused(self, tmp_path: Path) -> None:
        """Session files without a journal are not silently mixed with a new run."""
        (tmp_path / "sessions-00001.ndjson").write_text("{}\n")

        with pytest.raises(ConfigError, match="--overwrite"):
            plan(tmp_path)


@pytest.fixture
def ledgers() -> Iterator[list[RunLedger]]:
    """Ledgers opened by a test; any left unfinished are finished, so no file stays open."""
    opened: list[RunLedger] = []
    yield opened
    for ledger in opened:
        if not ledger.journal._file.closed:
            ledger.finish(complete=False, abandon=True, stats=RunStats())


def open_ledger(ledgers: list[RunLedger], directory: Path, **flags: Any) -> RunLedger:
    ledger = RunLedger.open(plan(directory, **flags), config=CONFIG, started_at="t")
    ledgers.append(ledger)
    return ledger


def records(n: int) -> bytes:
    return b"".join(orjson.dumps({"Id": f"s{i}"}) + b"\n" for i in range(n))


class TestLedger:
    def test_overwrite_deletes_the_old_run_when_the_ledger_opens(
        self, tmp_path: Path, ledgers: list[RunLedger]
    ) -> None:
        """Opening the ledger of --overwrite deletes the old run's files, and no other file."""
        write_run(tmp_path)
        (tmp_path / "notes.txt").write_text("mine")

        ledger = open_ledger(ledgers, tmp_path, overwrite=True)

        assert ledger.run_id != "r1"
        assert listing(tmp_path) == ["errors.ndjson.part", "journal.ndjson", "notes.txt"]

    def test_a_resumed_run_counts_every_segment(
        self, tmp_path: Path, ledgers: list[RunLedger]
    ) -> None:
        """The manifest adds up requests over segments and lists every segment's files."""
        first = open_ledger(ledgers, tmp_path)
        first.sink.write_sessions("a", records(2), 2)
        first.finish(complete=False, abandon=False, stats=RunStats(requests=5, duplicates=3))

        second = open_ledger(ledgers, tmp_path, resume=True)
        second.sink.write_sessions("b", records(1), 1)
        done = second.finish(complete=True, abandon=False, stats=RunStats(requests=2, duplicates=3))

        assert done.error is None and done.complete
        assert done.manifest is not None
        counts = done.manifest["counts"]
        assert (counts["requests"], counts["duplicates_dropped"], counts["segments"]) == (7, 3, 2)
        assert (counts["machines_ok"], counts["sessions"]) == (2, 3)
        names = [f["name"] for f in done.manifest["files"]]
        assert names == ["sessions-00001.ndjson", "sessions-00002.ndjson"]
        assert orjson.loads((tmp_path / "manifest.json").read_bytes()) == done.manifest

    def test_the_ledger_keeps_the_journal_it_writes(
        self, tmp_path: Path, ledgers: list[RunLedger]
    ) -> None:
        """What the ledger holds in memory agrees with its journal read back; the machines it
        committed are counted, not held."""
        ledger = open_ledger(ledgers, tmp_path)
        for machine in "abcde":
            ledger.sink.write_sessions(machine, records(1), 1)
        ledger.finish(complete=True, abandon=False, stats=RunStats())
        read = read_journal(tmp_path)

        assert read is not None
        held = ledger.state
        assert (read.files, read.counters, read.segments) == (held.files, held.counters, 1)
        assert read.complete == held.complete
        assert read.machines_committed == held.machines_committed == 5
        assert len(held.committed) == 0

    def test_a_commit_that_fails_at_the_end_leaves_the_run_incomplete(
        self, tmp_path: Path, ledgers: list[RunLedger]
    ) -> None:
        """If the last file cannot be renamed, its machines stay uncommitted: not complete."""
        ledger = open_ledger(ledgers, tmp_path)
        ledger.sink.write_sessions("a", records(1), 1)
        (tmp_path / "sessions-00001.ndjson.part").unlink()  # the rename will fail

        done = ledger.finish(complete=True, abandon=False, stats=RunStats())

        assert isinstance(done.error, OutputError)
        assert "sessions-00001.ndjson" in str(done.error)
        assert done.complete is False
        assert done.manifest is not None and done.manifest["counts"]["machines_ok"] == 0

    def test_standing_failures_go_to_errors_ndjson(
        self, tmp_path: Path, ledgers: list[RunLedger]
    ) -> None:
        """errors.ndjson holds this run's failures, and finish counts them for the exit code."""
        ledger = open_ledger(ledgers, tmp_path)
        ledger.sink.write_failure(failure("x"))

        done = ledger.finish(complete=True, abandon=False, stats=RunStats())

        assert done.failures == 1
        assert b'"machine":"x"' in (tmp_path / "errors.ndjson").read_bytes()
        assert done.manifest is not None
        assert done.manifest["counts"]["machines_failed"] == {"server_error": 1}

    def test_every_file_of_the_run_is_private_under_umask_022(
        self, tmp_path: Path, ledgers: list[RunLedger]
    ) -> None:
        """Sessions, errors, journal, manifest and lock grant nothing to others."""
        out = tmp_path / "out"
        old = os.umask(0o022)
        try:
            with lock_directory(out):
                ledger = open_ledger(ledgers, out)
                ledger.sink.write_sessions("a", records(1), 1)
                ledger.sink.write_failure(failure("x"))
                ledger.finish(complete=True, abandon=False, stats=RunStats())
        finally:
            os.umask(old)

        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
        assert set(modes) == {
            LOCK_NAME,
            "errors.ndjson",
            "journal.ndjson",
            "manifest.json",
            "sessions-00001.ndjson",
        }
        assert {name: mode for name, mode in modes.items() if mode & ~0o660} == {}


@pytest.mark.parametrize(
    ("earlier", "new", "committed", "reread", "kept"),
    [
        pytest.param(["a", "b"], [], {"a"}, False, ["b"], id="collected-now"),
        pytest.param(["a", "b"], ["b"], set(), False, ["a"], id="failed-again-now"),
        pytest.param(["A"], [], {"a"}, False, [], id="case-insensitive"),
    ],
)
def test_kept_failures(
    earlier: list[str], new: list[str], committed: set[str], reread: bool, kept: list[str]
) -> None:
    """An earlier failure stands unless this run collected the machine or failed it again."""
    result = kept_failures(
        [failure(m) for m in earlier],
        [failure(m) for m in new],
        {key_digest(m) for m in committed},
        reread=reread,
    )

    assert [f.machine for f in result] == kept


def test_bad_input_lines_are_reported_anew_when_the_input_is_reread() -> None:
    """On resume the list is read again, so its bad lines are not kept from the earlier run."""
    bad = replace(failure("m.txt:3"), kind=ErrorKind.INVALID_INPUT)

    assert kept_failures([bad], [], set(), reread=True) == []
    assert kept_failures([bad], [], set(), reread=False) == [bad]
