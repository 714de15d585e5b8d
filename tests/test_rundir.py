"""Deciding what a run may do with its output directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from collector.errors import ConfigError
from collector.journal import CommittedFile, Journal
from collector.rundir import Action, plan_run

FINGERPRINT: dict[str, Any] = {"machines": "m.txt", "mode": "per-machine", "separator": "."}


def write_run(directory: Path, fingerprint: dict[str, Any] = FINGERPRINT) -> None:
    directory.mkdir(exist_ok=True)
    journal = Journal(directory)
    journal.append({"t": "start", "run_id": "r1", "started_at": "t0", "fingerprint": fingerprint})
    journal.record_commit(CommittedFile("sessions-00001.ndjson", 1, 2, "h", ("a",)), "t1")
    journal.close()
    (directory / "sessions-00001.ndjson").write_text("{}\n")


def plan(directory: Path, **flags: Any):
    options = {"resume": False, "retry_failed": False, "overwrite": False} | flags
    return plan_run(directory, fingerprint=FINGERPRINT, **options)


def test_a_new_directory_starts_fresh(tmp_path: Path) -> None:
    """A missing directory is created and the run starts fresh."""
    result = plan(tmp_path / "new" / "out")

    assert result.action is Action.FRESH
    assert (tmp_path / "new" / "out").is_dir()


def test_another_run_is_refused_without_a_flag(tmp_path: Path) -> None:
    """A directory holding a run is refused, naming the run and the flags that would continue it."""
    write_run(tmp_path)

    with pytest.raises(ConfigError, match=r"holds run r1 .*--resume.*--retry-failed.*--overwrite"):
        plan(tmp_path)


def test_resume_removes_parts_and_orphans_but_keeps_journaled_files(tmp_path: Path) -> None:
    """Resume deletes .part files and unjournaled session files, never a committed one."""
    write_run(tmp_path)
    (tmp_path / "sessions-00002.ndjson.part").write_text("{")
    (tmp_path / "sessions-00002.ndjson").write_text("{}\n")  # renamed, never journaled

    result = plan(tmp_path, resume=True)

    assert result.action is Action.RESUME
    assert result.state is not None and result.state.committed == {"a"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["journal.ndjson", "sessions-00001.ndjson"]


def test_resume_with_another_machine_list_is_refused(tmp_path: Path) -> None:
    """Resuming with a configuration that collects something else names what changed."""
    write_run(tmp_path, FINGERPRINT | {"machines": "other.txt"})

    with pytest.raises(ConfigError, match=r"machines: 'other\.txt' then, 'm\.txt' now"):
        plan(tmp_path, resume=True)


def test_retry_failed_needs_a_run(tmp_path: Path) -> None:
    """--retry-failed in an empty directory says there is nothing to retry."""
    with pytest.raises(ConfigError, match="holds no run to retry"):
        plan(tmp_path, retry_failed=True)


def test_resume_in_an_empty_directory_starts_fresh(tmp_path: Path) -> None:
    """A nightly job may always pass --resume: with nothing to resume, the run starts fresh."""
    assert plan(tmp_path, resume=True).action is Action.FRESH


def test_overwrite_removes_the_old_run_only(tmp_path: Path) -> None:
    """--overwrite deletes the run's files and leaves other files alone."""
    write_run(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")

    assert plan(tmp_path, overwrite=True).action is Action.FRESH
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_foreign_session_files_without_journal_are_refused(tmp_path: Path) -> None:
    """Session files without a journal are not silently mixed with a new run."""
    (tmp_path / "sessions-00001.ndjson").write_text("{}\n")

    with pytest.raises(ConfigError, match="--overwrite"):
        plan(tmp_path)
