"""Where records go: rotated session files committed by rename, `errors.ndjson`, or stdout.

The commit protocol (SPEC 6.1, 6.3): a session file is written as `NAME.part`; once complete it
is flushed, fsynced and closed, renamed to `NAME`, the directory is fsynced, and only then is
the journal told which machines it holds. A name without `.part` is therefore always a whole
file, and a machine is never split across two files (rotation happens between machines), so
re-collecting an uncommitted machine cannot duplicate a committed record. `SessionFiles`
renames files as they fill; its user decides when a commit names them (`CommitLog`).

Every file is created private (`PRIVATE_MODE`, whatever the umask): records hold personal data.
Every OSError becomes an `OutputError` naming the path: a full disk or an unwritable directory
stops the run (exit 3) while every committed file stays whole.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import orjson

from collector.config import Compression
from collector.errors import OutputError
from collector.models import Failure
from collector.redact import redact

PART = ".part"
ERRORS_NAME = "errors.ndjson"
MANIFEST_NAME = "manifest.json"
# Records hold user names and client addresses: never grant anything to others.
PRIVATE_MODE = 0o660


def private_opener(path: str, flags: int) -> int:
    """`open(..., opener=private_opener)`: create the file at most `PRIVATE_MODE`.

    A file that already exists (a leftover of an older version) loses any bit beyond it too.
    """
    fd = os.open(path, flags, PRIVATE_MODE)
    mode = stat.S_IMODE(os.fstat(fd).st_mode)
    if mode & ~PRIVATE_MODE:
        os.fchmod(fd, mode & PRIVATE_MODE)
    return fd


@dataclass(frozen=True, slots=True)
class SessionFile:
    """A session file renamed into place: what the journal and the manifest say of it."""

    name: str
    records: int
    bytes: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "records": self.records,
            "bytes": self.bytes,
            "sha256": self.sha256,
        }


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
        with open(temp, "wb", opener=private_opener) as handle:
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
    """Rotated `sessions-NNNNN.ndjson[.gz]` files in `directory`, renamed into place one by one.

    `write` appends records to the open `.part` file; `finish_file` makes it final and says
    what it holds. It knows nothing of machines: which ones a file holds is the caller's to
    commit, so a unit of work may span one file (a machine) or several (a site-wide listing).
    """

    def __init__(
        self, directory: Path, *, compress: Compression, max_records: int, next_number: int
    ) -> None:
        self.directory = directory
        self.compress = compress
        self.max_records = max_records
        self.number = next_number
        self._raw: BinaryIO | None = None
        self._hashing: HashingWriter | None = None
        self._gzip: gzip.GzipFile | None = None
        self._records = 0

    @property
    def current_name(self) -> str:
        return session_file_name(self.number, self.compress)

    @property
    def is_full(self) -> bool:
        """The open file holds `max_records` or more: finish it before the next unit of work."""
        return self._records >= self.max_records

    def write(self, data: bytes, records: int) -> None:
        """Append `records` lines (`data`) to the open file, opening one if needed."""
        if not records:
            return
        if self._hashing is None:
            self._open()
        try:
            (self._gzip or self._hashing).write(data)  # type: ignore[union-attr]  # opened above
        except OSError as exc:
            raise OutputError(describe_os_error(exc, self._part_path())) from exc
        self._records += records

    def finish_file(self) -> SessionFile | None:
        """Make the open file final and durable (renamed, directory fsynced); None if none open."""
        if self._hashing is None:
            return None
        assert self._raw is not None
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
        finished = SessionFile(
            name=final.name,
            records=self._records,
            bytes=self._hashing.bytes,
            sha256=self._hashing.sha.hexdigest(),
        )
        self._raw = self._hashing = self._gzip = None
        self._records = 0
        self.number += 1
        return finished

    def abandon(self) -> None:
        """Close the open `.part` without renaming it (a fatal error; resume deletes it)."""
        # The file is abandoned: a failed close loses nothing committed.
        with contextlib.suppress(OSError):
            if self._gzip is not None:
                self._gzip.close()
        with contextlib.suppress(OSError):
            if self._raw is not None:
                self._raw.close()
        self._raw = self._hashing = self._gzip = None
        self._records = 0

    def _part_path(self) -> Path:
        return self.directory / (self.current_name + PART)

    def _open(self) -> None:
        path = self._part_path()
        try:
            # Closed by finish_file() or abandon().
            self._raw = open(path, "wb", opener=private_opener)  # noqa: SIM115
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
            # Closed by finish().
            self._file = open(self._target, "wb", opener=private_opener)  # noqa: SIM115
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
        try:
            self._file.close()
        except OSError as exc:
            raise OutputError(describe_os_error(exc, self._target)) from exc
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


class MachineKeys:
    """The keys of the machines one commit names, held as the body of one JSON array.

    A file may hold hundreds of thousands of machines before it is renamed; as one bytes
    buffer their keys take a third of the memory of as many `str` objects in a list, and the
    journal writes the buffer out as it is (`json_parts`), with no copy.
    """

    __slots__ = ("_body", "count")

    def __init__(self) -> None:
        self._body = bytearray()
        self.count = 0

    @classmethod
    def of(cls, keys: Iterable[str]) -> MachineKeys:
        made = cls()
        for key in keys:
            made.add(key)
        return made

    def add(self, key: str) -> None:
        if self.count:
            self._body += b","
        self._body += orjson.dumps(key)
        self.count += 1

    def __len__(self) -> int:
        return self.count

    def json(self) -> orjson.Fragment:
        """The keys as a JSON array, for `orjson.dumps` to embed as is."""
        return orjson.Fragment(b"[" + self._body + b"]")

    def json_parts(self) -> tuple[bytes, bytearray, bytes]:
        """The JSON array in three parts, the keys not copied: for writing out as they are."""
        return b"[", self._body, b"]"

    def keys(self) -> list[str]:
        keys: list[str] = orjson.loads(b"[" + self._body + b"]")
        return keys


class CommitLog(Protocol):
    """**Protocol:** where a unit of work is committed once its files are renamed (the journal)."""

    def commit(self, files: Sequence[SessionFile], machines: MachineKeys) -> None: ...


class DirectorySink:
    """One machine's records at a time to rotated files; each file's machines committed with it.

    A file is finished between machines once full; idle machines are committed with the next
    file, or with no file at all at the end.
    """

    def __init__(self, files: SessionFiles, errors: ErrorLog, log: CommitLog) -> None:
        self.files = files
        self.errors = errors
        self.log = log
        self._machines = MachineKeys()  # written since the last commit

    def write_sessions(self, machine_key: str, data: bytes, records: int) -> None:
        self.files.write(data, records)
        self._machines.add(machine_key)
        if self.files.is_full:
            self.flush()

    def write_failure(self, failure: Failure) -> None:
        self.errors.add(failure)

    def flush(self) -> None:
        """Finish the open file and commit its machines."""
        if not self._machines:
            return
        finished = self.files.finish_file()
        self.log.commit([finished] if finished else [], self._machines)
        self._machines = MachineKeys()


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
