"""Session files renamed as they fill, the per-machine sink's commits, and the error log."""

from __future__ import annotations

import gzip
import hashlib
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from collector.config import Compression
from collector.errors import OutputError
from collector.models import ErrorKind, Failure
from collector.sinks import (
    DirectorySink,
    ErrorLog,
    MachineKeys,
    SessionFile,
    SessionFiles,
    read_errors,
    write_atomic,
)


def lines(n: int, tag: str = "m") -> bytes:
    return b"".join(orjson.dumps({"i": i, "m": tag}) + b"\n" for i in range(n))


def make_files(
    tmp_path: Path, *, max_records: int = 5, compress: Compression = Compression.NONE
) -> SessionFiles:
    return SessionFiles(tmp_path, compress=compress, max_records=max_records, next_number=1)


class FakeCommitLog:
    """Records each commit with the directory listing at that moment."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.commits: list[tuple[list[SessionFile], list[str]]] = []
        self.seen_on_disk: list[list[str]] = []

    def commit(self, files: Sequence[SessionFile], machines: MachineKeys) -> None:
        self.commits.append((list(files), machines.keys()))
        self.seen_on_disk.append(sorted(p.name for p in self.directory.iterdir()))


@pytest.fixture
def make_sink(tmp_path: Path) -> Iterator[Callable[[int], tuple[DirectorySink, FakeCommitLog]]]:
    """A factory of per-machine sinks over `tmp_path`; their error logs are closed after."""
    logs: list[ErrorLog] = []

    def make(max_records: int) -> tuple[DirectorySink, FakeCommitLog]:
        logs.append(ErrorLog(tmp_path / "errors.ndjson", staged=False))
        commits = FakeCommitLog(tmp_path)
        return DirectorySink(
            make_files(tmp_path, max_records=max_records), logs[-1], commits
        ), commits

    yield make
    for errors in logs:
        errors.finish()


def names(commits: list[tuple[list[SessionFile], list[str]]]) -> list[tuple[list[str], list[str]]]:
    return [([f.name for f in files], machines) for files, machines in commits]


class TestSessionFiles:
    def test_file_is_part_until_finished(self, tmp_path: Path) -> None:
        """Records go to NAME.part; the final name appears only when the file is finished."""
        files = make_files(tmp_path, max_records=100)

        files.write(lines(3), 3)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["sessions-00001.ndjson.part"]

        finished = files.finish_file()
        assert finished is not None and finished.name == "sessions-00001.ndjson"
        assert finished.records == 3
        assert sorted(p.name for p in tmp_path.iterdir()) == ["sessions-00001.ndjson"]

    def test_checksum_and_size_match_the_file(self, tmp_path: Path) -> None:
        """The sha256 and byte count reported are those of the bytes on disk."""
        files = make_files(tmp_path, max_records=100)
        files.write(lines(10), 10)
        finished = files.finish_file()

        data = (tmp_path / "sessions-00001.ndjson").read_bytes()
        assert finished == SessionFile(
            "sessions-00001.ndjson", 10, len(data), hashlib.sha256(data).hexdigest()
        )

    def test_gzip_files_decompress_to_the_records(self, tmp_path: Path) -> None:
        """With compress = gzip the file is .ndjson.gz and its checksum covers the gzip bytes."""
        files = make_files(tmp_path, max_records=100, compress=Compression.GZIP)
        files.write(lines(4), 4)
        finished = files.finish_file()

        path = tmp_path / "sessions-00001.ndjson.gz"
        assert gzip.decompress(path.read_bytes()) == lines(4)
        assert finished is not None
        assert finished.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()

    def test_nothing_written_finishes_no_file(self, tmp_path: Path) -> None:
        """With no records written there is no file to finish."""
        files = make_files(tmp_path)
        files.write(b"", 0)

        assert files.finish_file() is None
        assert list(tmp_path.iterdir()) == []

    def test_files_are_private_under_umask_022(self, tmp_path: Path) -> None:
        """A session file grants nothing to others, whatever the umask."""
        old = os.umask(0o022)
        try:
            files = make_files(tmp_path)
            files.write(lines(1), 1)
            files.finish_file()
        finally:
            os.umask(old)

        mode = stat.S_IMODE((tmp_path / "sessions-00001.ndjson").stat().st_mode)
        assert mode & 0o007 == 0
        assert mode & ~0o660 == 0

    def test_unwritable_directory_names_the_path(self, tmp_path: Path) -> None:
        """A directory that cannot hold the file gives an OutputError naming the path."""
        not_a_dir = tmp_path / "file"
        not_a_dir.write_text("x")
        files = make_files(not_a_dir)

        with pytest.raises(OutputError, match=r"sessions-00001\.ndjson\.part"):
            files.write(lines(1), 1)


class TestDirectorySink:
    def test_a_file_is_committed_with_its_machines_after_the_rename(self, make_sink: Any) -> None:
        """The commit names the renamed file and its machines; no .part is left at that moment."""
        sink, log = make_sink(100)

        sink.write_sessions("a", lines(3), 3)
        sink.flush()

        assert names(log.commits) == [(["sessions-00001.ndjson"], ["a"])]
        assert log.seen_on_disk == [["errors.ndjson", "sessions-00001.ndjson"]]

    def test_rotation_happens_between_machines(self, tmp_path: Path, make_sink: Any) -> None:
        """A machine's records never span two files; a file may pass the limit by one machine."""
        sink, log = make_sink(5)

        sink.write_sessions("a", lines(3, "a"), 3)
        sink.write_sessions("b", lines(4, "b"), 4)  # 7 >= 5: rotate after b
        sink.write_sessions("c", lines(2, "c"), 2)
        sink.flush()

        assert names(log.commits) == [
            (["sessions-00001.ndjson"], ["a", "b"]),
            (["sessions-00002.ndjson"], ["c"]),
        ]
        second = (tmp_path / "sessions-00002.ndjson").read_bytes().splitlines()
        assert {orjson.loads(line)["m"] for line in second} == {"c"}

    def test_idle_machines_are_committed_without_a_file(
        self, tmp_path: Path, make_sink: Any
    ) -> None:
        """Machines without sessions are committed with no file at all."""
        sink, log = make_sink(5)

        sink.write_sessions("idle", b"", 0)
        sink.flush()

        assert log.commits == [([], ["idle"])]
        assert [p.name for p in tmp_path.iterdir()] == ["errors.ndjson"]

    def test_flush_with_nothing_written_commits_nothing(self, make_sink: Any) -> None:
        """A flush after the last commit journals no empty line."""
        sink, log = make_sink(5)
        sink.flush()

        assert log.commits == []


def failure(machine: str, kind: ErrorKind = ErrorKind.NOT_FOUND) -> Failure:
    return Failure(machine, kind, 404, "Machine not found", 1, "tx", "2026-01-01T00:00:00Z")


class TestErrorLog:
    def test_staged_log_writes_kept_then_new(self, tmp_path: Path) -> None:
        """A staged log leaves errors.ndjson alone until finish, then writes kept + new whole."""
        path = tmp_path / "errors.ndjson"
        write_atomic(path, orjson.dumps(failure("old").to_json()) + b"\n")
        log = ErrorLog(path, staged=True)
        log.add(failure("new"))

        assert [f.machine for f in read_errors(path)] == ["old"]
        log.finish(kept=[failure("kept")])

        assert [f.machine for f in read_errors(path)] == ["kept", "new"]
        assert not (tmp_path / "errors.ndjson.part").exists()

    def test_read_errors_skips_a_torn_line(self, tmp_path: Path) -> None:
        """A partial last line in errors.ndjson is skipped, the rest read."""
        path = tmp_path / "errors.ndjson"
        path.write_bytes(orjson.dumps(failure("a").to_json()) + b'\n{"machine": "b", "ki')

        assert [f.machine for f in read_errors(path)] == ["a"]


def test_machine_keys_are_one_json_array() -> None:
    """The keys of a commit come back as they were added, and embed in a line as a JSON array."""
    keys = MachineKeys.of(["corp\\vda-1", 'odd"name', "vda-2.corp.example"])

    assert len(keys) == 3
    assert keys.keys() == ["corp\\vda-1", 'odd"name', "vda-2.corp.example"]
    assert orjson.loads(orjson.dumps({"machines": keys.json()})) == {"machines": keys.keys()}
    assert orjson.dumps(MachineKeys().json()) == b"[]"
