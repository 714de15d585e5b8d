"""Session files committed by rename, the journal, and the error log."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import orjson
import pytest

from collector.config import Compression
from collector.errors import ConfigError, OutputError
from collector.journal import CommittedFile, Journal, read_journal
from collector.models import ErrorKind, Failure
from collector.sinks import ErrorLog, SessionFiles, read_errors, write_atomic


def lines(n: int, tag: str = "m") -> bytes:
    return b"".join(orjson.dumps({"i": i, "m": tag}) + b"\n" for i in range(n))


def make_files(tmp_path: Path, *, max_records: int = 5, compress: Compression = Compression.NONE):
    commits: list[CommittedFile] = []
    seen_on_disk: list[list[str]] = []

    def on_commit(committed: CommittedFile) -> None:
        commits.append(committed)
        seen_on_disk.append(sorted(p.name for p in tmp_path.iterdir()))

    files = SessionFiles(
        tmp_path, compress=compress, max_records=max_records, next_number=1, on_commit=on_commit
    )
    return files, commits, seen_on_disk


class TestSessionFiles:
    def test_file_is_part_until_committed(self, tmp_path: Path) -> None:
        """Records go to NAME.part; the final name appears only at commit, before the callback."""
        files, commits, seen = make_files(tmp_path, max_records=100)

        files.add("a", lines(3), 3)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["sessions-00001.ndjson.part"]

        files.commit()
        assert seen == [["sessions-00001.ndjson"]]
        assert commits[0].name == "sessions-00001.ndjson"
        assert commits[0].records == 3
        assert commits[0].machines == ("a",)

    def test_rotation_happens_between_machines(self, tmp_path: Path) -> None:
        """A machine's records never span two files; a file may pass the limit by one machine."""
        files, commits, _ = make_files(tmp_path, max_records=5)

        files.add("a", lines(3, "a"), 3)
        files.add("b", lines(4, "b"), 4)  # 7 >= 5: rotate after b
        files.add("c", lines(2, "c"), 2)
        files.commit()

        assert [(c.name, c.records, c.machines) for c in commits] == [
            ("sessions-00001.ndjson", 7, ("a", "b")),
            ("sessions-00002.ndjson", 2, ("c",)),
        ]
        second = (tmp_path / "sessions-00002.ndjson").read_bytes().splitlines()
        assert {orjson.loads(line)["m"] for line in second} == {"c"}

    def test_checksum_and_size_match_the_file(self, tmp_path: Path) -> None:
        """The sha256 and byte count reported are those of the bytes on disk."""
        files, commits, _ = make_files(tmp_path, max_records=100)
        files.add("a", lines(10), 10)
        files.commit()

        data = (tmp_path / "sessions-00001.ndjson").read_bytes()
        assert commits[0].sha256 == hashlib.sha256(data).hexdigest()
        assert commits[0].bytes == len(data)

    def test_gzip_files_decompress_to_the_records(self, tmp_path: Path) -> None:
        """With compress = gzip the file is .ndjson.gz and its checksum covers the gzip bytes."""
        files, commits, _ = make_files(tmp_path, max_records=100, compress=Compression.GZIP)
        files.add("a", lines(4), 4)
        files.commit()

        path = tmp_path / "sessions-00001.ndjson.gz"
        assert gzip.decompress(path.read_bytes()) == lines(4)
        assert commits[0].sha256 == hashlib.sha256(path.read_bytes()).hexdigest()

    def test_idle_machines_need_no_file(self, tmp_path: Path) -> None:
        """Machines without sessions are committed with no file at all."""
        files, commits, _ = make_files(tmp_path)
        files.add("idle", b"", 0)
        files.commit()

        assert commits == [CommittedFile(None, 0, 0, "", ("idle",))]
        assert list(tmp_path.iterdir()) == []

    def test_unwritable_directory_names_the_path(self, tmp_path: Path) -> None:
        """A directory that cannot hold the file gives an OutputError naming the path."""
        not_a_dir = tmp_path / "file"
        not_a_dir.write_text("x")
        files = SessionFiles(
            not_a_dir, compress=Compression.NONE, max_records=5, next_number=1, on_commit=print
        )

        with pytest.raises(OutputError, match=r"sessions-00001\.ndjson\.part"):
            files.add("a", lines(1), 1)


class TestJournal:
    def test_commits_read_back(self, tmp_path: Path) -> None:
        """Committed machines and files are read back, and numbering continues after them."""
        journal = Journal(tmp_path)
        journal.append({"t": "start", "run_id": "r1", "started_at": "t0", "fingerprint": {"a": 1}})
        journal.record_commit(CommittedFile("sessions-00001.ndjson", 3, 30, "h", ("a", "b")), "t1")
        journal.record_commit(CommittedFile(None, 0, 0, "", ("c",)), "t2")
        journal.close()

        state = read_journal(tmp_path)

        assert state is not None
        assert state.run_id == "r1"
        assert state.committed == {"a", "b", "c"}
        assert state.next_file_number == 2
        assert state.records == 3

    def test_a_torn_last_line_is_ignored(self, tmp_path: Path) -> None:
        """A crash mid-append leaves a partial line, which commits nothing."""
        journal = Journal(tmp_path)
        journal.append({"t": "start", "run_id": "r1", "started_at": "t0", "fingerprint": {}})
        journal.record_commit(CommittedFile("sessions-00001.ndjson", 1, 5, "h", ("a",)), "t1")
        journal.close()
        with open(tmp_path / "journal.ndjson", "ab") as handle:
            handle.write(b'{"t":"commit","file":"sessions-00002.ndjson","machines":["b"')

        state = read_journal(tmp_path)

        assert state is not None
        assert state.committed == {"a"}

    def test_a_foreign_file_is_refused(self, tmp_path: Path) -> None:
        """A journal.ndjson that is not ours is an error naming the file."""
        (tmp_path / "journal.ndjson").write_bytes(b'{"hello": 1}\n')

        with pytest.raises(ConfigError, match=r"journal\.ndjson:1: not a collector journal"):
            read_journal(tmp_path)

    def test_no_journal_is_none(self, tmp_path: Path) -> None:
        """A directory without a journal holds no run."""
        assert read_journal(tmp_path) is None


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
