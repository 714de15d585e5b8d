"""Machine lists (SPEC 4): text, CSV and NDJSON parsing, name checks, dedupe and shards.

`read_machines` is a pure generator over lines: it yields a `Machine` for every good line and an
`InvalidLine` (never an exception) for every bad one, so a run reports them all and reads on.
Only `open_machine_list` and `file_fingerprint` touch the file system. Nothing here holds more
than one record at a time (a few lines at most, for a quoted line break), apart from the
dedupe digests: the list streams into the pool.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import re
from collections import deque
from collections.abc import Iterable, Iterator
from typing import NamedTuple, TextIO

import orjson

from collector.config import InputFormat
from collector.digests import DigestSet
from collector.errors import ConfigError, InputError
from collector.models import InvalidLine, Machine, key_digest, machine_key

MAX_NAME = 256
# Tried in this order when no column is configured; matched case-insensitively.
DEFAULT_COLUMNS = ("Name", "MachineName", "DnsName", "Id")
STDIN = "-"
STDIN_SOURCE = "<stdin>"
BOM = "\ufeff"
# Kept in `InvalidLine.text`, which ends up in errors.ndjson and logs: a bad line may be huge.
MAX_TEXT = 300

# C0 and C1 controls, DEL, invisible format characters (zero-width space, a BOM met mid-file,
# bidi marks), line and paragraph separators, and the lone surrogates that `surrogateescape`
# makes of bytes that are not UTF-8.
BAD_CHAR = re.compile(
    "[\x00-\x1f\x7f-\x9f\u00ad\u200b-\u200f\u2028-\u202e\u2060-\u2064\ufeff\ud800-\udfff]"
)
LONE_CR = re.compile("\r(?!\n)")
NOT_UTF8 = re.compile("[\udc80-\udcff]")
# A quoted CSV field (a note, say) may hold line breaks; a quote left open is given up on after
# this many lines, so that it spoils one line and not the rest of the file.
MAX_RECORD_LINES = 100
SHARD = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


# --- formats ---------------------------------------------------------------------------------


def detect_format(path: str, fmt: InputFormat) -> InputFormat:
    """The format to read `path` as: `fmt` itself unless it is `auto`, then by extension.

    `.csv` is csv, `.ndjson` and `.jsonl` are ndjson, anything else (standard input included)
    is text.
    """
    if fmt is not InputFormat.AUTO:
        return fmt
    lower = path.lower()
    if lower.endswith(".csv"):
        return InputFormat.CSV
    if lower.endswith((".ndjson", ".jsonl")):
        return InputFormat.NDJSON
    return InputFormat.TEXT


def read_machines(
    lines: Iterable[str], *, fmt: InputFormat, column: str, source: str
) -> Iterator[Machine | InvalidLine]:
    """Every machine of the list, in order, and an `InvalidLine` for each unreadable line.

    Line numbers are 1-based physical lines; a line ends at `\n` only, so a lone carriage
    return is a control character inside a name. `column` picks the CSV column or NDJSON
    field (empty: the first of Name, MachineName, DnsName, Id present); it is ignored for
    text. `fmt=auto` is settled from `source`'s extension. A quoted CSV field may hold line
    breaks (a record then has the number of its first line), but an unclosed quote spoils one
    line and not the rest of the file.

    Raises `InputError`, while iterating, if the CSV header has neither `column` nor any default
    column, or cannot be parsed.
    """
    numbered = enumerate(without_bom(lines), 1)
    fmt = detect_format(source, fmt)
    if fmt is InputFormat.CSV:
        return read_csv(numbered, column, source)
    if fmt is InputFormat.NDJSON:
        return read_ndjson(numbered, column, source)
    return read_text(numbered, source)


def without_bom(lines: Iterable[str]) -> Iterator[str]:
    """The lines, with a byte-order mark dropped from the first (stdin is not read as utf-8-sig)."""
    it = iter(lines)
    for first in it:
        yield first.removeprefix(BOM)
        break
    yield from it


def read_text(numbered: Iterable[tuple[int, str]], source: str) -> Iterator[Machine | InvalidLine]:
    for number, raw in numbered:
        name = raw.strip()
        if not name or name.startswith("#"):
            continue
        yield checked(name, source, number, raw, "line")


def read_csv(
    numbered: Iterable[tuple[int, str]], column: str, source: str
) -> Iterator[Machine | InvalidLine]:
    header: list[str] | None = None
    index = 0
    for number, raw, row in csv_records(numbered):
        if isinstance(row, csv.Error):
            if header is None:
                raise InputError(
                    f"{source}:{number}: the CSV header cannot be read ({row}); fix its quoting"
                ) from None
            yield invalid(source, number, csv_problem(row, raw), raw)
            continue
        if header is None:
            header = row
            index = csv_column(header, column, source, number)
            continue
        if len(row) != len(header):
            yield invalid(
                source,
                number,
                f"line has {len(row)} fields; the header has {len(header)}",
                raw,
            )
            continue
        yield checked(row[index], source, number, raw, f"the {header[index].strip()} field")


class UnclosedQuote(csv.Error):
    """Raised for a CSV record whose quoted field is still open where reading gave up."""


def csv_records(
    numbered: Iterable[tuple[int, str]],
) -> Iterator[tuple[int, str, list[str] | csv.Error]]:
    """Each CSV record as (first line number, its text, its fields or what spoils it).

    A quoted field may hold line breaks, so a record may span lines. A quote left open
    spoils only the line it opens on: after `MAX_RECORD_LINES` lines, or at the end of the
    file, that line is reported and the lines after it are read again as records of their
    own. Blank lines between records are skipped.
    """
    lines = iter(numbered)
    replay: deque[tuple[int, str]] = deque()  # lines taken ahead, to read again (bounded)
    pending: list[tuple[int, str]] = []
    while True:
        line = replay.popleft() if replay else next(lines, None)
        if line is None:
            if not pending:
                return
            number, raw = pending[0]
            yield number, raw, UnclosedQuote("a quoted field is never closed")
            replay.extend(pending[1:])
            pending.clear()
            continue
        if not pending and not line[1].strip():
            continue
        pending.append(line)
        text = "".join(raw for _, raw in pending)
        row = parse_record(text)
        if row is not None:
            yield pending[0][0], text, row
            pending.clear()
        elif len(pending) >= MAX_RECORD_LINES:
            number, raw = pending[0]
            yield (
                number,
                raw,
                UnclosedQuote(f"a quoted field is still open {len(pending)} lines on"),
            )
            replay.extendleft(reversed(pending[1:]))
            pending.clear()


def parse_record(text: str) -> list[str] | csv.Error | None:
    """The fields of the one CSV record in `text`, the error that spoils it, or None if a
    quoted field is still open at the end of the text (the record goes on below)."""
    wanted_more = False

    def one_line() -> Iterator[str]:
        nonlocal wanted_more
        yield text
        wanted_more = True  # the reader asks for another line only inside an open quote

    try:
        row = next(csv.reader(one_line(), strict=True))
    except csv.Error as exc:
        return None if wanted_more else exc
    return None if wanted_more else row


def csv_problem(error: csv.Error, raw: str) -> str:
    """What to tell the user about a CSV line the reader refused."""
    lone_cr = LONE_CR.search(raw.rstrip("\r\n"))
    if lone_cr is not None:
        # The csv module calls this a new line in an unquoted field: it is a control character.
        return control_char_message("\r", lone_cr.start() + 1)
    return f"bad CSV line ({error}); check its quotes"


def csv_column(header: list[str], column: str, source: str, number: int) -> int:
    """The index of the configured column, else of the first default column present."""
    folded = [h.strip().casefold() for h in header]
    wanted = (column,) if column else DEFAULT_COLUMNS
    for name in wanted:
        if name.casefold() in folded:
            return folded.index(name.casefold())
    found = ", ".join(h.strip() for h in header) or "(none)"
    hint = ""
    if len(header) == 1 and (";" in header[0] or "\t" in header[0]):
        hint = "; the file seems to use ';' or tabs between fields: save it with commas"
    if column:
        raise InputError(
            f'{source}:{number}: no column "{column}" (the configured [input] column) in the CSV '
            f"header (found: {found}){hint}"
        )
    raise InputError(
        f"{source}:{number}: no {', '.join(DEFAULT_COLUMNS[:-1])} or {DEFAULT_COLUMNS[-1]} "
        f"column in the CSV header (found: {found}){hint}. Name the column with [input] column "
        "or COLLECTOR_INPUT_COLUMN"
    )


def read_ndjson(
    numbered: Iterable[tuple[int, str]], column: str, source: str
) -> Iterator[Machine | InvalidLine]:
    wanted = (column,) if column else DEFAULT_COLUMNS
    for number, raw in numbered:
        if not raw.strip():
            continue
        if NOT_UTF8.search(raw):
            # Checked first: orjson would only say "invalid JSON" for bytes that are not UTF-8.
            # Control characters are left to the name check: a tab between tokens is valid JSON.
            yield invalid(source, number, bad_char_message(raw), raw)
            continue
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            yield invalid(source, number, f"not valid JSON: {exc}", raw)
            continue
        if not isinstance(obj, dict):
            yield invalid(source, number, f"a JSON {json_kind(obj)}, not an object", raw)
            continue
        key = ndjson_field(obj, wanted)
        if key is None:
            names = ", ".join(f'"{w}"' for w in wanted)
            problem = (
                f"the object has no {names} field"
                if column
                else f"the object has none of the fields {names}"
            )
            yield invalid(source, number, problem, raw)
            continue
        value = obj[key]
        if not isinstance(value, str):
            yield invalid(
                source, number, f'the "{key}" field is a {json_kind(value)}, not a string', raw
            )
            continue
        yield checked(value, source, number, raw, f'the "{key}" field')


def ndjson_field(obj: dict[str, object], wanted: Iterable[str]) -> str | None:
    """The key of `obj` to read: an exact match first, then a case-insensitive one."""
    for name in wanted:
        if name in obj:
            return name
    folded = {k.casefold(): k for k in reversed(obj)}  # reversed: the first key wins
    for name in wanted:
        if name.casefold() in folded:
            return folded[name.casefold()]
    return None


def json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "string"


# --- names -----------------------------------------------------------------------------------


def name_problem(name: str, what: str = "name") -> str | None:
    """What is wrong with a trimmed machine name, or None if it can be sent.

    `what` names the thing measured in the message ("line", "the Name field").
    """
    if not name:
        return f"{what} is empty; give a machine name, DNS name or Id"
    if not name.strip("."):
        # `.` and `..` would go out as dot segments (`Machines/../Sessions`), which a proxy
        # normalising paths turns into another endpoint; no machine is named only with dots.
        return f'{what} is "{name}", only dots: give a machine name, DNS name or Id'
    if BAD_CHAR.search(name):
        return bad_char_message(name)
    if len(name) > MAX_NAME:
        return f"{what} is {len(name)} characters; a machine name is at most {MAX_NAME}"
    return None


def bad_char_message(text: str) -> str:
    found = BAD_CHAR.search(text)
    assert found is not None
    char = found.group()
    column = found.start() + 1
    if "\udc80" <= char <= "\udcff":
        return (
            f"byte 0x{ord(char) - 0xDC00:02X} at position {column} is not UTF-8; "
            "save the file as UTF-8"
        )
    return control_char_message(char, column)


def control_char_message(char: str, column: int) -> str:
    return (
        f"the name holds a control or invisible character, U+{ord(char):04X} at position "
        f"{column}; a machine name is printable text"
    )


def checked(name: str, source: str, number: int, raw: str, what: str) -> Machine | InvalidLine:
    name = name.strip()
    problem = name_problem(name, what)
    if problem is not None:
        return invalid(source, number, problem, raw)
    return Machine.from_name(name, source, number)


def invalid(source: str, number: int, message: str, raw: str) -> InvalidLine:
    text = raw.rstrip("\r\n")
    if NOT_UTF8.search(text):
        # Bytes kept by `surrogateescape` cannot be written as JSON: show them as \xNN.
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    if len(text) > MAX_TEXT:
        text = text[:MAX_TEXT] + "…"
    return InvalidLine(source=source, line=number, message=message, text=text)


# --- opening ---------------------------------------------------------------------------------


class MachineList(NamedTuple):
    """An open machine list: its lines and the name messages use for it."""

    lines: Iterable[str]
    source: str


@contextlib.contextmanager
def open_machine_list(path: str, stdin: TextIO | None) -> Iterator[MachineList]:
    """Open the list at `path`, or standard input for `-`, closing the file on exit.

    Use as `with open_machine_list(path, sys.stdin) as (lines, source): ...`. A file, and
    standard input alike, is read as UTF-8 (a byte-order mark dropped; bytes that are not
    UTF-8 become invalid lines rather than a crash), split at `\n` only and with line endings
    kept as they are: `csv` sees them untranslated, and a lone `\r` stays inside its line to
    be refused as a control character rather than splitting a name in two. Standard input is
    never closed.

    Raises `InputError` naming the path if the file is missing or cannot be read, or if `-` is
    given and there is no standard input.
    """
    if path == STDIN:
        if stdin is None:
            raise InputError(
                "the machine list is - (standard input) but there is none: pipe a list in, "
                "or give a file with --machines"
            )
        yield MachineList(stdin_lines(stdin), STDIN_SOURCE)
        return
    try:
        f = open(path, encoding="utf-8-sig", errors="surrogateescape", newline="\n")  # noqa: SIM115 -- closed by the with below, after the yield
    except FileNotFoundError:
        raise InputError(
            f"machine list {path} not found: give an existing file with --machines or "
            "[input] machines, or use --all-machines"
        ) from None
    except IsADirectoryError:
        raise InputError(f"machine list {path} is a directory: give a file") from None
    except PermissionError:
        raise InputError(
            f"machine list {path} cannot be read: permission denied; check its permissions"
        ) from None
    except OSError as exc:
        raise InputError(f"machine list {path} cannot be read: {exc.strerror or exc}") from None
    with f:
        yield MachineList(read_lines(f, path), path)


def stdin_lines(stdin: TextIO) -> Iterator[str]:
    """Standard input's lines, read as a file is (its own text layer translates a lone `\r`)."""
    buffer = getattr(stdin, "buffer", None)
    if buffer is None:  # text already (a StringIO in tests)
        yield from stdin
        return
    text = io.TextIOWrapper(buffer, encoding="utf-8", errors="surrogateescape", newline="\n")
    try:
        yield from text
    finally:
        text.detach()  # leaves standard input open


def read_lines(f: TextIO, path: str) -> Iterator[str]:
    """The file's lines; a read error mid-file becomes an `InputError` naming the path."""
    try:
        yield from f
    except OSError as exc:
        raise InputError(f"machine list {path} cannot be read: {exc.strerror or exc}") from None


def file_fingerprint(path: str) -> str:
    """The sha256 hex digest of the file's bytes, read in chunks.

    Raises `InputError` naming the path if the file cannot be read.
    """
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    except OSError as exc:
        raise InputError(f"machine list {path} cannot be read: {exc.strerror or exc}") from None
    return digest.hexdigest()


# --- dedupe and shards -----------------------------------------------------------------------


class Deduper:
    """Drops machines already seen (case-insensitively, by `Machine.key`) and counts them.

    Memory is a `DigestSet` of 16-byte key digests (`key_digest`), 20 to 40 bytes a machine:
    nothing else of a machine is kept.
    """

    __slots__ = ("duplicates", "seen")

    def __init__(self) -> None:
        self.seen = DigestSet()
        self.duplicates = 0

    def add(self, machine: Machine) -> bool:
        """True if the machine is new; False (and counted) if it is a duplicate."""
        return self.add_digest(key_digest(machine.key))

    def add_digest(self, digest: bytes) -> bool:
        """`add` for a machine whose `key_digest` the caller has already computed."""
        if self.seen.add(digest):
            return True
        self.duplicates += 1
        return False

    def __len__(self) -> int:
        return len(self.seen)


def parse_shard(text: str) -> tuple[int, int]:
    """`K/N` as `(K, N)`.

    Raises `ConfigError` if the text is not two whole numbers with 0 <= K < N.
    """
    found = SHARD.fullmatch(text)
    if found is None:
        raise ConfigError(f'--shard "{text}" must be K/N, such as 0/4 for the first of four shards')
    k, n = int(found[1]), int(found[2])
    if n < 1:
        raise ConfigError(f'--shard "{text}": N must be at least 1')
    if k >= n:
        raise ConfigError(
            f'--shard "{text}": K must be below N (the shards of N are numbered 0 to {n - 1})'
        )
    return k, n


def shard_of(key: str, n: int) -> int:
    """The shard (0 to n-1) of a machine key: stable across runs, hosts and Python versions.

    The key is normalised with `machine_key` first, so any spelling of a name lands alike.
    Python's `hash()` is salted per process, so a digest of the UTF-8 bytes is used instead.
    """
    digest = hashlib.blake2b(machine_key(key).encode("utf-8", "surrogatepass"), digest_size=8)
    return int.from_bytes(digest.digest(), "big") % n


def in_shard(key: str, shard: tuple[int, int] | None) -> bool:
    """True if the key belongs to shard `(K, N)`; every key belongs to shard None (no --shard)."""
    if shard is None:
        return True
    k, n = shard
    return shard_of(key, n) == k


def select_machines(
    items: Iterable[Machine | InvalidLine],
    deduper: Deduper,
    shard: tuple[int, int] | None = None,
) -> Iterator[Machine | InvalidLine]:
    """The machines of this shard, each once; invalid lines pass through for reporting.

    The shard is taken first, so the dedupe set only holds this shard's keys and the
    duplicates counted across all N shards add up to the duplicates of the whole list.
    """
    for item in items:
        if isinstance(item, InvalidLine) or (in_shard(item.key, shard) and deduper.add(item)):
            yield item
