"""The run journal: which machines are in committed files, so `--resume` is exactly-once.

`journal.ndjson` in the output directory is append-only. Its first line describes the run
(id, start, a fingerprint of what is collected); a `commit` line is appended, flushed and
fsynced only *after* a session file was renamed into place, and names the machines whose
sessions that file holds. A machine is committed exactly when such a line names it, so a
`kill -9` at any instant leaves a journal that describes only whole files. A torn last line
(the crash came mid-append) is ignored: its file is then an orphan, deleted on resume.
A site-wide listing (SPEC 5.5) is committed by one `listing` line naming all its files and
machines, appended after its last file was renamed; until then all its files are orphans.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from collector.errors import ConfigError, OutputError

JOURNAL_NAME = "journal.ndjson"


@dataclass(frozen=True, slots=True)
class CommittedFile:
    """A session file renamed into place, and the machines (keys) it holds."""

    name: str | None  # None: only machines with zero sessions, no file was needed
    records: int
    bytes: int
    sha256: str
    machines: tuple[str, ...]

    def to_manifest(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "records": self.records,
            "bytes": self.bytes,
            "sha256": self.sha256,
        }


@dataclass(slots=True)
class JournalState:
    """What a journal says about a run so far."""

    run_id: str
    started_at: str
    fingerprint: dict[str, Any]
    committed: set[str] = field(default_factory=set)
    files: list[CommittedFile] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)  # requests, retries... of ended segments
    segments: int = 0

    @property
    def next_file_number(self) -> int:
        numbers = [file_number(f.name) for f in self.files if f.name]
        return max(numbers, default=0) + 1

    @property
    def records(self) -> int:
        return sum(f.records for f in self.files)


def file_number(name: str) -> int:
    """The NNNNN of `sessions-NNNNN.ndjson[.gz]`."""
    return int(name.split("-", 1)[1].split(".", 1)[0])


def read_journal(directory: Path) -> JournalState | None:
    """Read the journal of `directory`, or None when there is none.

    Raises `ConfigError` if the journal exists but its first line is unreadable.
    """
    path = directory / JOURNAL_NAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise OutputError(f"cannot read the journal {path}: {exc.strerror}") from exc
    state: JournalState | None = None
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            # Only the last line can be torn by a crash; anything after it was never acknowledged.
            break
        kind = entry.get("t")
        if state is None:
            if kind != "start":
                raise ConfigError(
                    f"{path}:{number}: not a collector journal; choose another output directory"
                )
            state = JournalState(
                run_id=entry["run_id"],
                started_at=entry["started_at"],
                fingerprint=entry.get("fingerprint", {}),
            )
        elif kind == "commit":
            committed = CommittedFile(
                name=entry["file"],
                records=entry["records"],
                bytes=entry["bytes"],
                sha256=entry["sha256"],
                machines=tuple(entry["machines"]),
            )
            state.files.append(committed)
            state.committed.update(committed.machines)
        elif kind == "listing":
            read_listing(entry, state)
        elif kind == "end":
            state.segments += 1
            for key, value in entry.get("counters", {}).items():
                state.counters[key] = state.counters.get(key, 0) + int(value)
    if state is None:
        raise ConfigError(f"{path} is empty; remove it, or choose another output directory")
    return state


def read_listing(entry: dict[str, Any], state: JournalState) -> None:
    """A site-wide listing (SPEC 5.5): its files and its machines, committed by one line."""
    for item in entry["files"]:
        state.files.append(
            CommittedFile(item["file"], item["records"], item["bytes"], item["sha256"], ())
        )
    state.committed.update(entry["machines"])
    for key, value in entry.get("pages", {}).items():
        state.counters[key] = state.counters.get(key, 0) + int(value)


class Journal:
    """Appends entries to `journal.ndjson`, each one flushed and fsynced before it returns."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / JOURNAL_NAME
        try:
            self._file = open(self.path, "ab")  # noqa: SIM115 - kept open for the whole run
        except OSError as exc:
            raise OutputError(f"cannot write the journal {self.path}: {exc.strerror}") from exc

    def append(self, entry: dict[str, Any]) -> None:
        try:
            self._file.write(orjson.dumps(entry, option=orjson.OPT_APPEND_NEWLINE))
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as exc:
            raise OutputError(f"cannot write the journal {self.path}: {exc.strerror}") from exc

    def record_commit(self, committed: CommittedFile, at: str) -> None:
        self.append(
            {
                "t": "commit",
                "file": committed.name,
                "records": committed.records,
                "bytes": committed.bytes,
                "sha256": committed.sha256,
                "machines": list(committed.machines),
                "at": at,
            }
        )

    def record_listing(
        self, files: list[CommittedFile], machines: list[str], pages: dict[str, int], at: str
    ) -> None:
        """Commit a whole site-wide listing: its renamed files and every machine it collected."""
        self.append(
            {
                "t": "listing",
                "files": [
                    {"file": f.name, "records": f.records, "bytes": f.bytes, "sha256": f.sha256}
                    for f in files
                ],
                "machines": machines,
                "pages": pages,
                "at": at,
            }
        )

    def close(self) -> None:
        self._file.close()
