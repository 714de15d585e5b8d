"""The run journal: which machines are in committed files, so `--resume` is exactly-once.

`journal.ndjson` in the output directory is append-only. Its first line describes the run
(id, start, a fingerprint of what is collected); a `commit` line is appended, flushed and
fsynced only *after* its session files were renamed into place, and names the files and the
machines whose sessions they hold. A machine is committed exactly when such a line names it,
so a `kill -9` at any instant leaves a journal that describes only whole files. A site-wide
listing (SPEC 5.5) is one such line naming all its files and machines, appended after its last
file was renamed; until then all its files are orphans.

A torn last line (the crash came mid-append: no final newline, or not JSON) commits nothing:
its files are orphans, deleted on resume, and the journal is cut back to its last whole line
before anything is appended. A bad line with whole lines after it is corruption, not a crash:
reading refuses it, naming the line.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from collector.digests import DigestSet
from collector.errors import ConfigError, OutputError
from collector.models import key_digest
from collector.sinks import MachineKeys, SessionFile, private_opener

log = logging.getLogger("collector.journal")

JOURNAL_NAME = "journal.ndjson"

# Counters a segment adds to the run's total. Any other counter (duplicates) is the largest of
# any segment's: each --resume reads the whole list again, so it sees the same duplicates.
ADDED_COUNTERS = frozenset(
    {"requests", "retries", "throttled", "token_requests", "session_pages", "machine_pages"}
)
# The first line of each later segment: `rundir.Action` values.
SEGMENT_STARTS = frozenset({"resume", "retry-failed"})


@dataclass(slots=True)
class JournalState:
    """What a journal says about a run so far."""

    run_id: str
    started_at: str
    fingerprint: dict[str, Any]
    # `models.key_digest` of each machine an earlier segment committed, in a `DigestSet`:
    # 20 to 40 bytes a machine, however long its name.
    committed: DigestSet = field(default_factory=DigestSet)
    files: list[SessionFile] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)  # requests, retries... of ended segments
    segments: int = 0
    complete: bool = False  # the last segment ended complete, and no other began since
    # Where reading stopped (the whole lines): a torn tail after it is cut before appending.
    length: int = field(default=0, compare=False)

    @property
    def next_file_number(self) -> int:
        return max((file_number(f.name) for f in self.files), default=0) + 1

    @property
    def records(self) -> int:
        return sum(f.records for f in self.files)

    # Machines this process committed since the journal was read: counted, not held, since
    # they are never in `committed` (the feed skips those) and never twice (it dedupes).
    added: int = 0

    @property
    def machines_committed(self) -> int:
        return len(self.committed) + self.added

    def add_commit(self, files: Iterable[SessionFile], machines: Iterable[str]) -> None:
        """A commit line read back from the journal: its files, and its machines to skip."""
        self.files.extend(files)
        self.committed.update(map(key_digest, machines))

    def count_commit(self, files: Iterable[SessionFile], machines: MachineKeys) -> None:
        """A commit this process journaled: its files, and how many machines it holds."""
        self.files.extend(files)
        self.added += len(machines)

    def add_end(self, complete: bool, counters: dict[str, int]) -> None:
        self.segments += 1
        self.complete = complete
        self.counters = fold_counters(self.counters, counters)


def fold_counters(total: dict[str, int], segment: dict[str, int]) -> dict[str, int]:
    """The run's counters once `segment` ended: added up, or the largest (see ADDED_COUNTERS)."""
    folded = dict(total)
    for key, value in segment.items():
        before = folded.get(key, 0)
        folded[key] = before + value if key in ADDED_COUNTERS else max(before, value)
    return folded


def file_number(name: str) -> int:
    """The NNNNN of `sessions-NNNNN.ndjson[.gz]`."""
    return int(name.split("-", 1)[1].split(".", 1)[0])


def commit_entry(files: Sequence[SessionFile], machines: MachineKeys, at: str) -> dict[str, Any]:
    return {
        "t": "commit",
        "files": [f.to_json() for f in files],
        "machines": machines.json(),
        "at": at,
    }


def commit_files(entry: dict[str, Any]) -> list[SessionFile]:
    if "files" in entry:
        return [session_file(f) for f in entry["files"]]
    # Journals of 0.x name one file a commit, or none (`"file": null`) for idle machines only.
    if entry["file"] is None:
        return []
    return [session_file(entry | {"name": entry["file"]})]


def session_file(item: dict[str, Any]) -> SessionFile:
    name = item["name"]
    if not isinstance(name, str):
        raise TypeError("a file name that is not a string")
    return SessionFile(name, int(item["records"]), int(item["bytes"]), str(item["sha256"]))


def apply_entry(state: JournalState | None, entry: Any, where: str) -> JournalState:
    """`state` after one journal line. Raises KeyError, TypeError or ValueError on a bad line."""
    if not isinstance(entry, dict):
        raise TypeError("not a JSON object")
    kind = entry.get("t")
    if state is None:
        if kind != "start":
            raise ConfigError(f"{where}: not a collector journal; choose another output directory")
        return JournalState(
            run_id=str(entry["run_id"]),
            started_at=str(entry["started_at"]),
            fingerprint=dict(entry.get("fingerprint", {})),
        )
    if kind == "commit":
        state.add_commit(commit_files(entry), [str(m) for m in entry["machines"]])
    elif kind == "end":
        counters = {str(k): int(v) for k, v in entry.get("counters", {}).items()}
        state.add_end(bool(entry.get("complete", False)), counters)
    elif kind in SEGMENT_STARTS:
        state.complete = False
    else:
        raise ValueError(f"an entry of unknown kind {kind!r}")
    return state


def parse_journal(raw: bytes, path: Path) -> JournalState:
    """The state a journal's bytes describe, its torn last line left out.

    Raises `OutputError` (exit 3) if a line before the last is bad, naming the file and line;
    `ConfigError` if the file is not a collector journal or holds no whole line.
    """
    lines = raw.split(b"\n")
    # After the last newline: b"" if the journal ends whole, else the torn part of a line.
    whole = lines[:-1]
    torn = bool(lines[-1])  # only to tell a bad last line from a bad middle one
    state: JournalState | None = None
    offset = 0
    for number, line in enumerate(whole, start=1):
        where = f"{path}:{number}"
        try:
            state = apply_entry(state, orjson.loads(line), where)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            if number == len(whole) and not torn:
                break  # the last line, cut where a newline stood: torn too
            raise OutputError(
                f"{where}: the journal is damaged ({describe_bad_line(exc)}) and the lines after "
                "it cannot be trusted; keep the directory for inspection and collect into a new "
                "--out directory"
            ) from exc
        offset += len(line) + 1
        state.length = offset
    if state is None:
        raise ConfigError(
            f"{path} holds no whole line (a run stopped as it began); remove it, or pass "
            "--overwrite"
        )
    return state


def describe_bad_line(exc: Exception) -> str:
    if isinstance(exc, orjson.JSONDecodeError):
        return "not JSON"
    if isinstance(exc, KeyError):
        return f"no {exc.args[0]!r} field"
    return str(exc)


def read_journal(directory: Path) -> JournalState | None:
    """Read the journal of `directory`, or None when there is none.

    Raises as `parse_journal` does, and `OutputError` if the journal cannot be read.
    """
    path = directory / JOURNAL_NAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise OutputError(f"cannot read the journal {path}: {exc.strerror}") from exc
    return parse_journal(raw, path)


class Journal:
    """Appends entries to `journal.ndjson`, each one flushed and fsynced before it returns.

    It is opened at `length`, the end of the last whole line read: a torn tail is cut off
    first, so no entry is ever glued onto a partial line.
    """

    def __init__(self, directory: Path, *, length: int = 0) -> None:
        self.path = directory / JOURNAL_NAME
        try:
            # Kept open for the whole run, closed by close().
            self._file = open(self.path, "ab", opener=private_opener)  # noqa: SIM115
            torn = self._file.tell() - length
            if torn > 0:
                log.warning(
                    "%s: cutting a torn last line (%d bytes) left by an interrupted run; the "
                    "files it named are collected again",
                    self.path,
                    torn,
                )
                self._file.truncate(length)
        except OSError as exc:
            raise OutputError(f"cannot write the journal {self.path}: {exc.strerror}") from exc

    def append(self, entry: dict[str, Any]) -> None:
        self.write_line([orjson.dumps(entry, option=orjson.OPT_APPEND_NEWLINE)])

    def append_commit(self, files: Sequence[SessionFile], machines: MachineKeys, at: str) -> None:
        """`append(commit_entry(files, machines, at))`, byte for byte, written in parts.

        A file of 200,000 machines names megabytes of keys: `orjson.dumps` of the entry
        would copy them twice (the array, then the line) at the run's peak of memory.
        """
        head = orjson.dumps({"t": "commit", "files": [f.to_json() for f in files]})
        tail = b',"at":' + orjson.dumps(at) + b"}\n"
        self.write_line([head[:-1], b',"machines":', *machines.json_parts(), tail])

    def write_line(self, parts: Iterable[bytes | bytearray]) -> None:
        """Write one line's parts, then flush and fsync. Raises `OutputError` naming the file."""
        try:
            for part in parts:
                self._file.write(part)
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as exc:
            raise OutputError(f"cannot write the journal {self.path}: {exc.strerror}") from exc

    def close(self) -> None:
        try:
            self._file.close()
        except OSError as exc:
            raise OutputError(f"cannot write the journal {self.path}: {exc.strerror}") from exc
