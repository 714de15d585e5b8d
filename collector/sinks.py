"""Where records go: rotated session files committed by rename, `errors.ndjson`, or stdout.

The commit protocol (SPEC 6.1, 6.3): a session file is written as `NAME.part`; once complete it
is flushed, fsynced and closed, renamed to `NAME`, the directory is fsynced, and only then is
the journal told which machines it holds. A name without `.part` is therefore always a whole
file, and a machine is never split across two files (rotation happens between machines), so
re-collecting an uncommitted machine cannot duplicate a committed record.

Every OSError becomes an `OutputError` naming the path: a full disk or an unwritable directory
stops the run (exit 3) while every committed file stays whole.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from collector.config import Compression
from collector.errors import OutputError
from collector.journal import CommittedFile, Journal
from collector.models import Failure
from collector.redact import redact

PART = ".part"
ERRORS_NAME = "errors.ndjson"
MANIFEST_NAME = "manifest.json"


def describe_os_error(exc: OSError, path: Path | str) -> str:
    """A message naming the path and what to do."""
    if exc.errno == errno.ENOSPC or exc.errno == errno.EFBIG:
        return (
            f"cannot write {path}: the disk is full (or a file size limit was hit); "
            "free space and run again with --resume"
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write {path}: permission denied; choose a writable --out directory"
    return f"cannot write {path}: {exc.strerror or exc}"


def fsync_directory(directory: Path) -> None:
    """Make a rename in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Write `path` whole or not at all: a temporary file, fsync, rename, fsync the directory."""
    temp = path.with_name(path.name + PART)
    try:
        with open(temp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
        fsync_directory(path.parent)
    except OSError as exc:
        raise OutputError(describe_os_error(exc, path)) from exc


class HashingWriter:
    """A binary file that counts and hashes the bytes written to it (what lands on disk)."""

    __slots__ = ("bytes", "raw", "sha")

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.sha = hashlib.sha256()
        self.bytes = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.bytes += len(data)
        return self.raw.write(data)

    def flush(self) -> None:
        self.raw.flush()


def session_file_name(number: int, compress: Compression) -> str:
    suffix = ".ndjson.gz" if compress is Compression.GZIP else ".ndjson"
    return f"sessions-{number:05d}{suffix}"


class SessionFiles:
    """Rotated `sessions-NNNNN.ndjson[.gz]` files in `directory`, committed one by one.

    `add` takes one machine's records; a file rotates once it holds `max_records` or more,
    between machines. `on_commit` is called after each rename (the journal append).
    """

    def __init__(
        self,
        directory: Path,
        *,
        compress: Compression,
        max_records: int,
        next_number: int,
        on_commit: Callable[[CommittedFile], None],
    ) -> None:
        self.directory = directory
        self.compress = compress
        self.max_records = max_records
        self.number = next_number
        self.on_commit = on_commit
        self._raw: BinaryIO | None = None
        self._hashing: HashingWriter | None = None
        self._gzip: gzip.GzipFile | None = None
        self._records = 0
        self._machines: list[str] = []

    @property
    def current_name(self) -> str:
        return session_file_name(self.number, self.compress)

    def add(self, machine_key: str, data: bytes, records: int) -> None:
        """Append one machine's records (`records` lines in `data`; none for an idle machine)."""
        if records:
            if self._hashing is None:
                self._open()
            try:
                (self._gzip or self._hashing).write(data)  # type: ignore[union-attr]  # opened above
            except OSError as exc:
                raise OutputError(describe_os_error(exc, self._part_path())) from exc
            self._records += records
        self._machines.append(machine_key)
        if self._records >= self.max_records:
            self.commit()

    def commit(self) -> None:
        """Make the current file final and durable, then report it.

        Machines with no sessions need no file: they are reported with `name=None`.
        """
        if not self._machines:
            return
        if self._hashing is None:
            self.on_commit(CommittedFile(None, 0, 0, "", tuple(self._machines)))
            self._machines = []
            return
        assert self._raw is not None and self._hashing is not None
        part, final = self._part_path(), self.directory / self.current_name
        try:
            if self._gzip is not None:
                self._gzip.close()  # writes the gzip trailer into the hashing writer
            self._raw.flush()
            os.fsync(self._raw.fileno())
            self._raw.close()
            os.replace(part, final)
            fsync_directory(self.directory)
        except OSError as exc:
            raise OutputError(describe_os_error(exc, final)) from exc
        committed = CommittedFile(
            name=final.name,
            records=self._records,
            bytes=self._hashing.bytes,
            sha256=self._hashing.sha.hexdigest(),
            machines=tuple(self._machines),
        )
        self._raw = self._hashing = self._gzip = None
        self._records = 0
        self._machines = []
        self.number += 1
        self.on_commit(committed)

    def abandon(self) -> None:
        """Close the open `.part` without committing it (a fatal error; resume deletes it)."""
        # The file is abandoned: a failed close loses nothing committed.
        with contextlib.suppress(OSError):
            if self._gzip is not None:
                self._gzip.close()
        with contextlib.suppress(OSError):
            if self._raw is not None:
                self._raw.close()
        self._raw = self._hashing = self._gzip = None

    def _part_path(self) -> Path:
        return self.directory / (self.current_name + PART)

    def _open(self) -> None:
        path = self._part_path()
        try:
            self._raw = open(path, "wb")  # noqa: SIM115 - closed by commit()/abandon()
        except OSError as exc:
            raise OutputError(describe_os_error(exc, path)) from exc
        self._hashing = HashingWriter(self._raw)
        if self.compress is Compression.GZIP:
            # mtime=0: the same records give the same bytes, hence the same sha256.
            self._gzip = gzip.GzipFile(filename="", mode="wb", fileobj=self._hashing, mtime=0)


def read_errors(path: Path) -> list[Failure]:
    """The failures listed in an `errors.ndjson`, skipping a torn last line."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise OutputError(f"cannot read {path}: {exc.strerror}") from exc
    failures = []
    for line in raw.splitlines():
        if not line.strip():
            continue
        try:
            failures.append(Failure.from_json(orjson.loads(line)))
        except (orjson.JSONDecodeError, KeyError, ValueError):
            continue
    return failures


class ErrorLog:
    """Failed machines, one JSON object a line, flushed as they come.

    In a directory run the lines go to `errors.ndjson.part`, and `finish` writes
    `errors.ndjson` whole from the entries kept from earlier runs plus this run's; so an
    interrupted `--retry-failed` never loses the list it was working from.
    """

    def __init__(self, path: Path, *, staged: bool) -> None:
        self.path = path
        self.staged = staged
        self._target = path.with_name(path.name + PART) if staged else path
        try:
            self._file = open(self._target, "wb")  # noqa: SIM115 - closed by finish()
        except OSError as exc:
            raise OutputError(describe_os_error(exc, self._target)) from exc
        self.failures: list[Failure] = []

    def add(self, failure: Failure) -> None:
        self.failures.append(failure)
        try:
            self._file.write(failure_line(failure))
            self._file.flush()
        except OSError as exc:
            raise OutputError(describe_os_error(exc, self._target)) from exc

    def finish(self, kept: Iterable[Failure] = ()) -> None:
        """Close the log; for a staged log, write `errors.ndjson` = `kept` + this run's failures."""
        self._file.close()
        if not self.staged:
            return
        every = [*kept, *self.failures]
        write_atomic(self.path, b"".join(map(failure_line, every)))
        # A stale errors.ndjson.part is ignored and replaced by the next run.
        with contextlib.suppress(OSError):
            self._target.unlink()


def failure_line(failure: Failure) -> bytes:
    """One line of errors.ndjson, with any secret or token a server echoed written as `***`.

    Only what a server can put there is redacted: the machine stays as the input named it,
    so that --retry-failed can read it back.
    """
    entry = failure.to_json()
    entry["message"] = redact(failure.message)
    if failure.transaction_id:
        entry["transaction_id"] = redact(failure.transaction_id)
    return orjson.dumps(entry, option=orjson.OPT_APPEND_NEWLINE)


def dump_json(data: Any) -> bytes:
    return orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)


class DirectorySink:
    """Records to rotated files committed through the journal; failures to the error log."""

    def __init__(self, files: SessionFiles, errors: ErrorLog, journal: Journal) -> None:
        self.files = files
        self.errors = errors
        self.journal = journal

    def write_sessions(self, machine_key: str, data: bytes, records: int) -> None:
        self.files.add(machine_key, data, records)

    def write_failure(self, failure: Failure) -> None:
        self.errors.add(failure)

    def flush(self) -> None:
        self.files.commit()


class StreamSink:
    """Records to a binary stream (standard output for `--out -`); failures to an optional log."""

    def __init__(self, stream: BinaryIO, errors: ErrorLog | None) -> None:
        self.stream = stream
        self.errors = errors

    def write_sessions(self, machine_key: str, data: bytes, records: int) -> None:
        if records:
            try:
                self.stream.write(data)
            except BrokenPipeError as exc:
                raise OutputError("standard output was closed by the reader") from exc

    def write_failure(self, failure: Failure) -> None:
        if self.errors is not None:
            self.errors.add(failure)

    def flush(self) -> None:
        try:
            self.stream.flush()
        except BrokenPipeError as exc:
            raise OutputError("standard output was closed by the reader") from exc
