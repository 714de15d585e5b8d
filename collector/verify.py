"""`collector verify DIR`: is a finished run whole, as a downstream job checks before loading it?

A run is whole when its manifest says `complete`; every file the manifest lists is on disk with
its records, bytes and sha256 (a gzip file's records counted decompressed); no `.part` file is
left and no session file is unlisted; the journal and the manifest agree; every line is a JSON
object; and no session `Id` appears twice. Each problem is one line naming the file (and line)
and what to do.

The checks are pure functions of plain values: the manifest, the journal's state, and what a
scan of each file found. Only `scan_file` and `verify_run` read the disk. Files are streamed a
chunk at a time; the Ids seen are kept as 16-byte digests, never as records.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from collector.digests import DigestSet
from collector.errors import CollectorError
from collector.journal import JOURNAL_NAME, JournalState, read_journal
from collector.models import KEY_DIGEST_SIZE
from collector.sinks import ERRORS_NAME, MANIFEST_NAME, PART

CHUNK = 1 << 20  # bytes read at a time: memory stays flat whatever the file size
# Problems reported per file before the rest are only counted: one bad file must not flood.
MAX_LINE_PROBLEMS = 20
GZIP_WBITS = 16 + zlib.MAX_WBITS  # zlib's way of saying "a gzip header and trailer"


@dataclass(slots=True)
class FileScan:
    """What reading one session file found."""

    bytes: int = 0
    sha256: str = ""
    records: int = 0
    problems: list[str] = field(default_factory=list)
    more_problems: int = 0  # past MAX_LINE_PROBLEMS

    def add(self, problem: str) -> None:
        if len(self.problems) < MAX_LINE_PROBLEMS:
            self.problems.append(problem)
        else:
            self.more_problems += 1


@dataclass(slots=True)
class Report:
    """The outcome of `verify_run`: whole when `problems` is empty."""

    directory: Path
    problems: list[str] = field(default_factory=list)
    files: int = 0
    records: int = 0


def id_digest(value: str) -> bytes:
    """A session Id as 16 bytes (`KEY_DIGEST_SIZE`, what a `DigestSet` holds)."""
    return hashlib.blake2b(
        value.encode("utf-8", "surrogatepass"), digest_size=KEY_DIGEST_SIZE
    ).digest()


def manifest_problems(manifest: Any, where: str) -> list[str]:
    """The manifest is readable and says the run is complete."""
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
        return [f"{where}: not a collector manifest (no list of files)"]
    if manifest.get("complete") is not True:
        return [
            f"{where}: the run is not complete (complete: {manifest.get('complete')!r}); "
            "continue it with collector run --resume"
        ]
    return []


def is_file_entry(entry: Any) -> bool:
    """A manifest entry naming a session file of the directory, with its counts and hash."""
    if not isinstance(entry, dict):
        return False
    name = entry.get("name")
    return (
        isinstance(name, str)
        and name == Path(name).name  # a bare name: never a path out of the directory
        and name.startswith("sessions-")
        and all(isinstance(entry.get(k), int) for k in ("records", "bytes"))
        and isinstance(entry.get("sha256"), str)
    )


def listed_files(
    manifest: dict[str, Any], where: str
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The manifest's files by name, and a problem for each entry that is not a session file."""
    files: dict[str, dict[str, Any]] = {}
    problems = []
    for number, entry in enumerate(manifest["files"], start=1):
        if not is_file_entry(entry):
            problems.append(f"{where}: files[{number}] is not a session file entry: {entry!r}")
        elif entry["name"] in files:
            problems.append(f"{where}: {entry['name']} is listed twice")
        else:
            files[entry["name"]] = entry
    return files, problems


def directory_problems(directory: Path, names: list[str], listed: set[str]) -> list[str]:
    """No `.part` file left, every listed file present, no session file unlisted."""
    problems = [
        f"{directory / name}: left by an interrupted run; continue it with collector run --resume"
        for name in names
        if name.endswith(PART)
    ]
    present = set(names)
    problems += [
        f"{directory / name}: listed in the manifest but missing"
        for name in sorted(listed - present)
    ]
    problems += [
        f"{directory / name}: a session file the manifest does not list"
        for name in names
        if name.startswith("sessions-") and not name.endswith(PART) and name not in listed
    ]
    return problems


def file_problems(path: Path, entry: dict[str, Any], scan: FileScan) -> list[str]:
    """The file's records, bytes and sha256 are what the manifest says."""
    problems = []
    for what, found in (("bytes", scan.bytes), ("records", scan.records)):
        if found != entry[what]:
            problems.append(f"{path}: {found} {what}, the manifest says {entry[what]}")
    if scan.sha256 != entry["sha256"]:
        problems.append(
            f"{path}: sha256 {scan.sha256}, the manifest says {entry['sha256']}: the file "
            "changed after the run; collect it again into a new directory"
        )
    return problems


def journal_problems(
    manifest: dict[str, Any], listed: dict[str, dict[str, Any]], state: JournalState, where: str
) -> list[str]:
    """The journal commits exactly the files, machines and run the manifest describes."""
    problems = []
    if manifest.get("run_id") != state.run_id:
        problems.append(
            f"{where}: run {state.run_id}, the manifest says {manifest.get('run_id')!r}"
        )
    journaled = {f.name: f.to_json() for f in state.files}
    problems += [
        f"{where}: {name} is in the manifest but was never committed"
        for name in sorted(set(listed) - set(journaled))
    ]
    problems += [
        f"{where}: {name} was committed but is not in the manifest"
        for name in sorted(set(journaled) - set(listed))
    ]
    problems += [
        f"{where}: {name} is {journaled[name]}, the manifest says {listed[name]}"
        for name in sorted(set(listed) & set(journaled))
        if listed[name] != journaled[name]
    ]
    counts = manifest_counts(manifest)
    if counts.get("machines_ok") != state.machines_committed:
        problems.append(
            f"{where}: {state.machines_committed} machines committed, the manifest says "
            f"{counts.get('machines_ok')!r}"
        )
    if counts.get("sessions") != state.records:
        problems.append(
            f"{where}: {state.records} sessions committed, the manifest says "
            f"{counts.get('sessions')!r}"
        )
    if manifest.get("complete") is True and not state.complete:
        problems.append(f"{where}: the last segment did not end complete, the manifest says it did")
    return problems


def manifest_counts(manifest: dict[str, Any]) -> dict[str, Any]:
    counts = manifest.get("counts")
    return counts if isinstance(counts, dict) else {}


def failure_problems(manifest: dict[str, Any], kinds: dict[str, int], where: str) -> list[str]:
    """`errors.ndjson` holds the failures the manifest counts."""
    counts = manifest_counts(manifest)
    if counts.get("machines_failed", {}) != kinds:
        said = counts.get("machines_failed")
        return [f"{where}: failures by kind {kinds}, the manifest says {said!r}"]
    return []


def lines_of(path: Path, scan: FileScan, compressed: bool) -> Iterator[bytes]:
    """The lines of `path` (decompressed), hashing and counting the bytes on disk as they pass."""
    sha = hashlib.sha256()
    inflate = zlib.decompressobj(GZIP_WBITS) if compressed else None
    carry = b""
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            sha.update(chunk)
            scan.bytes += len(chunk)
            if inflate is not None:
                try:
                    chunk = inflate_chunk(inflate, chunk)
                except zlib.error as exc:
                    scan.add(f"{path}: not a whole gzip file ({exc})")
                    inflate = None
                    chunk = b""
                    carry = b""
            *lines, carry = (carry + chunk).split(b"\n")
            yield from lines
    scan.sha256 = sha.hexdigest()
    if inflate is not None and not inflate.eof:
        scan.add(f"{path}: the gzip stream is cut short")
    if carry:
        scan.add(f"{path}: the last line has no newline (the file was cut short)")
        yield carry


def inflate_chunk(inflate: Any, chunk: bytes) -> bytes:
    """Decompress a chunk of the one gzip member a session file is. Raises `zlib.error`."""
    out: bytes = inflate.decompress(chunk)
    if inflate.eof and inflate.unused_data:
        raise zlib.error("bytes after the end of the gzip stream")
    return out


def scan_file(path: Path, seen: DigestSet) -> FileScan:
    """Read one session file: bytes, sha256, records; bad lines and Ids already in `seen`."""
    scan = FileScan()
    for number, line in enumerate(lines_of(path, scan, path.name.endswith(".gz")), start=1):
        scan.records += 1
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            record = None
        if not isinstance(record, dict):
            scan.add(f"{path}:{number}: not a JSON object")
            continue
        session_id = record.get("Id")
        if isinstance(session_id, str) and not seen.add(id_digest(session_id)):
            scan.add(f"{path}:{number}: session Id {session_id} appears twice in the run")
    if scan.more_problems:
        scan.problems.append(f"{path}: {scan.more_problems} more problems like these")
    return scan


def verify_run(directory: Path) -> Report:
    """Check the run in `directory`; the report's problems are empty when it is whole."""
    report = Report(directory)
    problems = report.problems
    manifest_path = directory / MANIFEST_NAME
    try:
        names = sorted(p.name for p in directory.iterdir() if p.is_file())
        manifest = orjson.loads(manifest_path.read_bytes())
    except FileNotFoundError as exc:
        return Report(
            directory, [f"{exc.filename}: missing; is this a collector output directory?"]
        )
    except (OSError, orjson.JSONDecodeError) as exc:
        return Report(directory, [f"{manifest_path}: cannot be read ({exc})"])
    problems += manifest_problems(manifest, str(manifest_path))
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
        return report
    listed, entry_problems = listed_files(manifest, str(manifest_path))
    problems += entry_problems
    problems += directory_problems(directory, names, set(listed))
    seen = DigestSet()  # 20 to 40 bytes a session (`digests.py`), not ~90 in a set of bytes
    for name, entry in listed.items():
        path = directory / name
        if name not in names:
            continue
        try:
            scan = scan_file(path, seen)
        except OSError as exc:
            problems.append(f"{path}: cannot be read ({exc.strerror})")
            continue
        problems += scan.problems + file_problems(path, entry, scan)
        report.files += 1
        report.records += scan.records
    problems += journal_check(directory, manifest, listed)
    problems += errors_check(directory, manifest)
    return report


def journal_check(
    directory: Path, manifest: dict[str, Any], listed: dict[str, dict[str, Any]]
) -> list[str]:
    where = str(directory / JOURNAL_NAME)
    try:
        state = read_journal(directory)
    except CollectorError as exc:
        return [str(exc)]
    if state is None:
        return [f"{where}: missing; the manifest cannot be checked against the commits"]
    problems = journal_problems(manifest, listed, state, where)
    try:
        size = (directory / JOURNAL_NAME).stat().st_size
    except OSError as exc:
        return [*problems, f"{where}: cannot be read ({exc.strerror})"]
    if size != state.length:
        problems.append(f"{where}: the last line is cut short (a run was interrupted)")
    return problems


def errors_check(directory: Path, manifest: dict[str, Any]) -> list[str]:
    path = directory / ERRORS_NAME
    kinds: dict[str, int] = {}
    problems = []
    try:
        raw = path.read_bytes()  # one line a failed machine: small beside the session files
    except FileNotFoundError:
        raw = b""
    except OSError as exc:
        return [f"{path}: cannot be read ({exc.strerror})"]
    for number, line in enumerate(raw.splitlines(), start=1):
        try:
            failure = orjson.loads(line)
        except orjson.JSONDecodeError:
            failure = None
        if not isinstance(failure, dict) or not isinstance(failure.get("kind"), str):
            problems.append(f"{path}:{number}: not a failure record")
            continue
        kinds[failure["kind"]] = kinds.get(failure["kind"], 0) + 1
    return problems + failure_problems(manifest, kinds, str(path))
