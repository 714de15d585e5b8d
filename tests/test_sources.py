"""Machine lists: formats, bad lines, opening, dedupe and shards (SPEC 4)."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from collector.config import InputFormat
from collector.errors import ConfigError, InputError
from collector.models import InvalidLine, Machine
from collector.sources import (
    MAX_RECORD_LINES,
    Deduper,
    detect_format,
    file_fingerprint,
    in_shard,
    open_machine_list,
    parse_shard,
    read_machines,
    select_machines,
    shard_of,
)

TEXT, CSV, NDJSON = InputFormat.TEXT, InputFormat.CSV, InputFormat.NDJSON
GUID = "0c3c3d5e-8b4e-4f4a-9a39-6d3b1a2f0e11"


def read(
    text: str, fmt: InputFormat, column: str = "", source: str = "list"
) -> list[Machine | InvalidLine]:
    return list(read_machines(io.StringIO(text), fmt=fmt, column=column, source=source))


def names(items: list[Machine | InvalidLine]) -> list[tuple[int | None, str]]:
    return [(m.line, m.name) for m in items if isinstance(m, Machine)]


def invalids(items: list[Machine | InvalidLine]) -> list[InvalidLine]:
    return [m for m in items if isinstance(m, InvalidLine)]


class TestDetectFormat:
    @pytest.mark.parametrize(
        ("path", "fmt", "expected"),
        [
            pytest.param("m.csv", InputFormat.AUTO, CSV, id="csv"),
            pytest.param("M.CSV", InputFormat.AUTO, CSV, id="csv-upper"),
            pytest.param("m.ndjson", InputFormat.AUTO, NDJSON, id="ndjson"),
            pytest.param("m.jsonl", InputFormat.AUTO, NDJSON, id="jsonl"),
            pytest.param("m.txt", InputFormat.AUTO, TEXT, id="txt"),
            pytest.param("machines", InputFormat.AUTO, TEXT, id="no-extension"),
            pytest.param("-", InputFormat.AUTO, TEXT, id="stdin"),
            pytest.param("-", CSV, CSV, id="stdin-set"),
            pytest.param("m.csv", TEXT, TEXT, id="set-wins"),
        ],
    )
    def test_format(self, path: str, fmt: InputFormat, expected: InputFormat) -> None:
        """auto goes by extension; a set format always wins."""
        assert detect_format(path, fmt) is expected

    def test_auto_reads_by_the_source_name(self) -> None:
        """read_machines settles auto from the source's extension."""
        items = read("Name\nweb01\n", InputFormat.AUTO, source="m.csv")

        assert names(items) == [(2, "web01")]


class TestText:
    def test_comments_blanks_and_whitespace(self) -> None:
        """Blank lines and # comments are skipped, names trimmed, line numbers physical."""
        text = "# machines\n\n  web01  \n\t\nCORP\\WEB02\r\n   # indented comment\nweb03"

        assert names(read(text, TEXT)) == [(3, "web01"), (5, "CORP\\WEB02"), (7, "web03")]

    def test_machine_fields(self) -> None:
        """A machine keeps its name, a case-folded key, the source and the line."""
        (machine,) = read("\nCORP\\Web01\n", TEXT, source="m.txt")

        assert machine == Machine("CORP\\Web01", "corp\\web01", "m.txt", 2)

    @pytest.mark.parametrize(
        "name",
        [
            pytest.param("CORP\\WEB01", id="domain-name"),
            pytest.param("web01.corp.example.com", id="dns"),
            pytest.param(GUID, id="guid"),
            pytest.param("x" * 256, id="256-chars"),
            pytest.param("Büro-PC", id="unicode"),
        ],
    )
    def test_accepted_names(self, name: str) -> None:
        """DOMAIN\\NAME, DNS names, GUIDs and names up to 256 characters are read."""
        assert names(read(name + "\n", TEXT)) == [(1, name)]

    def test_a_bom_is_dropped(self) -> None:
        """A byte-order mark before the first name is not part of it."""
        assert names(read("\ufeffweb01\nweb02\n", TEXT)) == [(1, "web01"), (2, "web02")]


BAD_LINES = [
    pytest.param(
        TEXT,
        "ok1\nweb\x07bell\nok2\n",
        2,
        "control or invisible character, U+0007 at position 4",
        id="text-control-char",
    ),
    pytest.param(
        TEXT,
        "ok1\n" + "a" * 300 + "\nok2\n",
        2,
        "line is 300 characters; a machine name is at most 256",
        id="text-too-long",
    ),
    pytest.param(
        TEXT,
        "ok1\nweb\u200b01\nok2\n",
        2,
        "U+200B",
        id="text-zero-width-space",
    ),
    pytest.param(TEXT, "ok1\n.\nok2\n", 2, 'line is ".", only dots', id="text-dot"),
    pytest.param(TEXT, "ok1\n..\nok2\n", 2, 'line is "..", only dots', id="text-dot-dot"),
    pytest.param(TEXT, "ok1\n ... \nok2\n", 2, "only dots", id="text-dots"),
    pytest.param(TEXT, "ok1\nweb\r02\nok2\n", 2, "U+000D at position 4", id="text-lone-cr"),
    pytest.param(
        CSV,
        'Name,Site\nok1,a\n"bad,b\nok2,c\n',
        3,
        "bad CSV line",
        id="csv-open-quote",
    ),
    pytest.param(
        CSV,
        'Name,Site\nok1,a\n"ba"d,b\nok2,c\n',
        3,
        "bad CSV line",
        id="csv-junk-after-quote",
    ),
    pytest.param(
        CSV,
        "Name,Site\nok1,a\nweb,b,extra\nok2,c\n",
        3,
        "line has 3 fields; the header has 2",
        id="csv-too-many-fields",
    ),
    pytest.param(
        CSV,
        "Name,Site\nok1,a\nlonely\nok2,c\n",
        3,
        "line has 1 fields; the header has 2",
        id="csv-too-few-fields",
    ),
    pytest.param(
        CSV,
        "Name,Site\nok1,a\n ,b\nok2,c\n",
        3,
        "the Name field is empty",
        id="csv-empty-field",
    ),
    pytest.param(
        CSV,
        "Name,Site\nok1,a\nweb\x01,b\nok2,c\n",
        3,
        "U+0001",
        id="csv-control-char",
    ),
    pytest.param(
        CSV,
        "Name,Site\nok1,a\n" + "b" * 257 + ",b\nok2,c\n",
        3,
        "the Name field is 257 characters; a machine name is at most 256",
        id="csv-too-long",
    ),
    pytest.param(CSV, "Name,Site\nok1,a\n..,b\nok2,c\n", 3, "only dots", id="csv-dot-dot"),
    pytest.param(
        CSV, "Name,Site\nok1,a\nweb\r02,b\nok2,c\n", 3, "U+000D at position 4", id="csv-lone-cr"
    ),
    pytest.param(
        CSV, 'Name,Site\nok1,a\n"web\r02",b\nok2,c\n', 3, "U+000D", id="csv-quoted-lone-cr"
    ),
    pytest.param(
        NDJSON,
        '{"Name":"ok1"}\n{"Name": \n{"Name":"ok2"}\n',
        2,
        "not valid JSON",
        id="ndjson-bad-json",
    ),
    pytest.param(
        NDJSON,
        '{"Name":"ok1"}\n["web"]\n{"Name":"ok2"}\n',
        2,
        "a JSON array, not an object",
        id="ndjson-array",
    ),
    pytest.param(
        NDJSON,
        '{"Name":"ok1"}\n"web"\n{"Name":"ok2"}\n',
        2,
        "a JSON string, not an object",
        id="ndjson-string",
    ),
    pytest.param(
        NDJSON,
        '{"Name":"ok1"}\n{"Host":"web"}\n{"Name":"ok2"}\n',
        2,
        'the object has none of the fields "Name", "MachineName", "DnsName", "Id"',
        id="ndjson-missing-field",
    ),
    pytest.param(
        NDJSON,
        '{"Name":"ok1"}\n{"Name":7}\n{"Name":"ok2"}\n',
        2,
        'the "Name" field is a number, not a string',
        id="ndjson-number",
    ),
    pytest.param(
        NDJSON,
        '{"Name":"ok1"}\n{"Name":null}\n{"Name":"ok2"}\n',
        2,
        'the "Name" field is a null, not a string',
        id="ndjson-null",
    ),
    pytest.param(
        NDJSON,
        '{"Name":"ok1"}\n{"Name":""}\n{"Name":"ok2"}\n',
        2,
        'the "Name" field is empty',
        id="ndjson-empty",
    ),
    pytest.param(
        NDJSON, '{"Name":"ok1"}\n{"Name":".."}\n{"Name":"ok2"}\n', 2, "only dots", id="ndjson-dots"
    ),
    pytest.param(
        NDJSON,
        '{"Name":"ok1"}\n{"Name":"a\\u001bb"}\n{"Name":"ok2"}\n',
        2,
        "U+001B",
        id="ndjson-escaped-control-char",
    ),
]


class TestBadLines:
    @pytest.mark.parametrize(("fmt", "text", "line", "message"), BAD_LINES)
    def test_a_bad_line_is_reported_and_the_rest_read(
        self, fmt: InputFormat, text: str, line: int, message: str
    ) -> None:
        """Each bad line becomes one InvalidLine with its line number; the others are read."""
        items = read(text, fmt, source="m")

        (bad,) = invalids(items)
        assert (bad.source, bad.line) == ("m", line)
        assert message in bad.message
        assert [name for _, name in names(items)] == ["ok1", "ok2"]

    def test_the_bad_text_is_kept_short(self) -> None:
        """An InvalidLine keeps at most 300 characters of the line, without its line break."""
        (bad,) = read("z" * 5000 + "\r\n", TEXT)

        assert isinstance(bad, InvalidLine)
        assert bad.text == "z" * 300 + "…"

    def test_where_names_file_and_line(self) -> None:
        """InvalidLine.where() reads source:line."""
        (bad,) = read("\n\n\x00\n", TEXT, source="m.txt")

        assert isinstance(bad, InvalidLine)
        assert bad.where() == "m.txt:3"


class TestCsv:
    @pytest.mark.parametrize(
        ("header", "expected"),
        [
            pytest.param("Name,Id", "n", id="name-first"),
            pytest.param("Id,DnsName", "d", id="dnsname-over-id"),
            pytest.param("Id,MachineName", "m", id="machinename-over-id"),
            pytest.param("Site,Id", "i", id="id-last-resort"),
            pytest.param(" NAME ,Id", "n", id="case-and-space-insensitive"),
        ],
    )
    def test_default_column(self, header: str, expected: str) -> None:
        """The first of Name, MachineName, DnsName, Id present is read."""
        first, second = header.split(",")
        values = {"name": "n", "id": "i", "dnsname": "d", "machinename": "m", "site": "s"}
        row = f"{values[first.strip().lower()]},{values[second.strip().lower()]}"

        assert names(read(f"{header}\n{row}\n", CSV)) == [(2, expected)]

    def test_the_column_can_be_chosen(self) -> None:
        """[input] column picks any column, case-insensitively."""
        items = read("Name,HostFQDN\nweb01,web01.corp.example.com\n", CSV, column="hostfqdn")

        assert names(items) == [(2, "web01.corp.example.com")]

    def test_quoted_fields_and_crlf(self) -> None:
        """Quoted fields with commas and CRLF line ends are read."""
        items = read('Site,Name\r\n"Paris, FR","CORP\\WEB01"\r\n', CSV)

        assert names(items) == [(2, "CORP\\WEB01")]

    def test_blank_lines_before_the_header(self) -> None:
        """Blank lines are skipped, and the line numbers stay physical."""
        assert names(read("\n\nName\n\nweb01\n", CSV)) == [(5, "web01")]

    def test_a_header_without_the_column_names_what_it_found(self) -> None:
        """A header lacking every default column is an InputError listing the headers."""
        with pytest.raises(InputError) as info:
            read("Host,Site\nweb01,a\n", CSV, source="m.csv")

        message = str(info.value)
        assert message.startswith("m.csv:1: no Name, MachineName, DnsName or Id column")
        assert "(found: Host, Site)" in message
        assert "[input] column" in message

    def test_a_missing_chosen_column_is_named(self) -> None:
        """A configured column absent from the header is named in the error."""
        with pytest.raises(InputError, match='no column "Host"'):
            read("Name,Site\nweb01,a\n", CSV, column="Host", source="m.csv")

    def test_semicolons_get_a_hint(self) -> None:
        """A semicolon-separated export gets a hint about the separator."""
        with pytest.raises(InputError, match="save it with commas"):
            read("Host;Site\nweb01;a\n", CSV)

    def test_a_quoted_line_break_belongs_to_its_field(self) -> None:
        """A record whose quoted field spans lines is read whole; later line numbers stay right."""
        text = 'Name,Notes\nweb01,"racked\r\nin Paris"\nweb02,x\n"web03","a\n\nb"\nweb04,y\n'

        items = read(text, CSV)

        assert not invalids(items)
        assert names(items) == [(2, "web01"), (4, "web02"), (5, "web03"), (8, "web04")]

    def test_an_unclosed_quote_spoils_one_line(self) -> None:
        """A quote never closed is given up on, and the lines after it are read as records."""
        rows = [f"ok{i},c\n" for i in range(MAX_RECORD_LINES + 5)]

        items = read('Name,Site\n"bad,b\n' + "".join(rows), CSV, source="m")

        (bad,) = invalids(items)
        assert (bad.line, bad.text) == (2, '"bad,b')
        assert "a quoted field is still open" in bad.message
        assert names(items) == [(i + 3, f"ok{i}") for i in range(len(rows))]

    def test_a_header_may_quote_a_line_break(self) -> None:
        """The header is a CSV record too: a quoted line break in it is read, not refused."""
        items = read('"Machine\nNotes",Name\nx,web01\n', CSV)

        assert names(items) == [(3, "web01")]

    def test_a_header_that_cannot_be_parsed(self) -> None:
        """Bad quoting in the header is an InputError, not an invalid line."""
        with pytest.raises(InputError, match=r"m\.csv:1: the CSV header cannot be read"):
            read('"Name\nweb01\n', CSV, source="m.csv")


class TestNdjson:
    def test_the_field_can_be_chosen(self) -> None:
        """[input] column picks the NDJSON field."""
        items = read('{"Name":"web01","Fqdn":"web01.corp"}\n', NDJSON, column="Fqdn")

        assert names(items) == [(1, "web01.corp")]

    def test_a_missing_chosen_field_is_named(self) -> None:
        """A configured field absent from an object is named in the InvalidLine."""
        (bad,) = read('{"Name":"web01"}\n', NDJSON, column="Fqdn")

        assert isinstance(bad, InvalidLine)
        assert bad.message == 'the object has no "Fqdn" field'

    def test_fields_match_case_insensitively(self) -> None:
        """A field spelt dnsname is found as DnsName."""
        items = read('{"dnsname":"web01.corp","other":1}\n', NDJSON)

        assert names(items) == [(1, "web01.corp")]

    def test_the_default_field_order_is_kept_per_object(self) -> None:
        """Each object is read by the first default field it has."""
        items = read('{"Id":"i","Name":"n"}\n{"Id":"i2"}\n\n  \n', NDJSON)

        assert names(items) == [(1, "n"), (2, "i2")]


class TestOpen:
    def test_a_file_is_read_and_closed(self, tmp_path: Path) -> None:
        """The lines of a file are read, and the file is closed on leaving the block."""
        path = tmp_path / "m.txt"
        path.write_text("web01\nweb02\n", encoding="utf-8")

        with open_machine_list(str(path), None) as (lines, source):
            items = read_machines(lines, fmt=TEXT, column="", source=source)
            first = next(items)

        assert source == str(path)
        assert first == Machine.from_name("web01", str(path), 1)
        with pytest.raises(ValueError, match="closed file"):
            next(items)

    def test_a_bom_file(self, tmp_path: Path) -> None:
        """A UTF-8 file with a BOM reads its CSV header correctly."""
        path = tmp_path / "m.csv"
        path.write_bytes(b"\xef\xbb\xbfName,Site\r\nweb01,a\r\n")

        with open_machine_list(str(path), None) as (lines, source):
            items = list(read_machines(lines, fmt=CSV, column="", source=source))

        assert names(items) == [(2, "web01")]

    def test_bytes_that_are_not_utf8_spoil_one_line(self, tmp_path: Path) -> None:
        """A Latin-1 byte makes its line invalid, naming the byte; other lines are read."""
        path = tmp_path / "m.txt"
        path.write_bytes(b"web01\nb\xe9ro\nweb02\n")

        with open_machine_list(str(path), None) as (lines, source):
            items = list(read_machines(lines, fmt=TEXT, column="", source=source))

        (bad,) = invalids(items)
        assert bad.line == 2
        assert "byte 0xE9 at position 2 is not UTF-8" in bad.message
        assert names(items) == [(1, "web01"), (3, "web02")]
        assert bad.text == "b\\xe9ro"  # written as JSON later: no lone surrogate may remain

    def test_a_lone_cr_in_a_file_stays_in_its_line(self, tmp_path: Path) -> None:
        """A bare CR in a file is a control character in a name, not a line break."""
        path = tmp_path / "m.txt"
        path.write_bytes(b"web01\r\nweb\r02\nweb03\n")

        with open_machine_list(str(path), None) as (lines, source):
            items = list(read_machines(lines, fmt=TEXT, column="", source=source))

        (bad,) = invalids(items)
        assert (bad.line, "U+000D" in bad.message) == (2, True)
        assert names(items) == [(1, "web01"), (3, "web03")]

    def test_a_lone_cr_on_stdin_stays_in_its_line(self) -> None:
        """Standard input is read as a file is: its own text layer does not split at a bare CR."""
        stdin = io.TextIOWrapper(io.BytesIO(b"web01\nweb\r02\nweb03\n"), encoding="utf-8")

        with open_machine_list("-", stdin) as (lines, source):
            items = list(read_machines(lines, fmt=TEXT, column="", source=source))

        assert [i.line for i in invalids(items)] == [2]
        assert names(items) == [(1, "web01"), (3, "web03")]
        assert not stdin.closed

    def test_stdin(self) -> None:
        """- reads standard input and does not close it."""
        stdin = io.StringIO("web01\n")

        with open_machine_list("-", stdin) as (lines, source):
            items = list(read_machines(lines, fmt=TEXT, column="", source=source))

        assert source == "<stdin>"
        assert names(items) == [(1, "web01")]
        assert not stdin.closed

    @pytest.mark.parametrize(
        ("make", "expected"),
        [
            pytest.param(lambda p: str(p / "missing.txt"), "missing.txt not found", id="missing"),
            pytest.param(lambda p: str(p), "is a directory", id="directory"),
        ],
    )
    def test_unreadable_files_are_named(self, tmp_path: Path, make, expected: str) -> None:
        """A missing file or a directory is an InputError naming the path and what to do."""
        path = make(tmp_path)

        with pytest.raises(InputError) as info, open_machine_list(path, None):
            pass

        assert str(info.value).startswith(f"machine list {path}")
        assert expected in str(info.value)

    def test_no_stdin(self) -> None:
        """- without a standard input is an InputError."""
        with pytest.raises(InputError, match="standard input"), open_machine_list("-", None):
            pass

    def test_fingerprint_is_the_sha256_of_the_bytes(self, tmp_path: Path) -> None:
        """file_fingerprint is the sha256 hex digest of the file's bytes."""
        path = tmp_path / "m.txt"
        data = b"web01\n" * 100_000
        path.write_bytes(data)

        assert file_fingerprint(str(path)) == hashlib.sha256(data).hexdigest()

    def test_fingerprint_of_a_missing_file(self, tmp_path: Path) -> None:
        """A missing file cannot be fingerprinted: InputError naming it."""
        with pytest.raises(InputError, match=r"gone\.txt"):
            file_fingerprint(str(tmp_path / "gone.txt"))


class TestDedupe:
    def test_duplicates_are_dropped_case_insensitively_and_counted(self) -> None:
        """WEB01, web01 and ' Web01 ' are one machine; two duplicates are counted."""
        deduper = Deduper()
        machines = [Machine.from_name(n) for n in ["WEB01", "web01", "web02", " Web01 "]]

        kept = [m.name for m in machines if deduper.add(m)]

        assert kept == ["WEB01", "web02"]
        assert deduper.duplicates == 2
        assert len(deduper) == 2

    def test_select_passes_invalid_lines_and_dedupes(self) -> None:
        """select_machines keeps invalid lines for reporting and drops duplicates."""
        items = read("web01\n\x00\nWEB01\nweb02\n", TEXT)
        deduper = Deduper()

        selected = list(select_machines(items, deduper))

        assert [getattr(i, "name", None) for i in selected] == ["web01", None, "web02"]
        assert deduper.duplicates == 1


KEYS = [f"corp\\web{i:05d}" for i in range(2000)] + [GUID, "web01.corp.example.com"]


class TestShards:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            pytest.param("0/1", (0, 1), id="single"),
            pytest.param("0/4", (0, 4), id="first"),
            pytest.param("3/4", (3, 4), id="last"),
            pytest.param(" 2 / 8 ", (2, 8), id="spaces"),
        ],
    )
    def test_parse(self, text: str, expected: tuple[int, int]) -> None:
        """K/N parses to (K, N)."""
        assert parse_shard(text) == expected

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            pytest.param("4/4", "K must be below N", id="k-equals-n"),
            pytest.param("5/4", "K must be below N", id="k-above-n"),
            pytest.param("0/0", "N must be at least 1", id="zero-shards"),
            pytest.param("-1/4", "must be K/N", id="negative"),
            pytest.param("1", "must be K/N", id="no-slash"),
            pytest.param("a/b", "must be K/N", id="letters"),
            pytest.param("", "must be K/N", id="empty"),
        ],
    )
    def test_parse_errors(self, text: str, expected: str) -> None:
        """Bad shard text is a ConfigError quoting it."""
        with pytest.raises(ConfigError) as info:
            parse_shard(text)

        assert f'--shard "{text}"' in str(info.value)
        assert expected in str(info.value)

    @pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 16])
    def test_shards_partition_the_keys(self, n: int) -> None:
        """Across the N shards every key is in exactly one, and no shard is empty."""
        owners = {key: [k for k in range(n) if in_shard(key, (k, n))] for key in KEYS}

        assert all(len(shards) == 1 for shards in owners.values())
        sizes = [sum(1 for s in owners.values() if s == [k]) for k in range(n)]
        assert min(sizes) > len(KEYS) / n / 2  # roughly even, not just non-empty

    @pytest.mark.parametrize(
        ("key", "expected"),
        [
            pytest.param("web01", [1, 1, 1, 9], id="name"),
            pytest.param("CORP\\WEB01", [0, 1, 2, 6], id="domain-name"),
            pytest.param(GUID, [0, 1, 2, 6], id="guid"),
        ],
    )
    def test_shards_are_stable(self, key: str, expected: list[int]) -> None:
        """A key's shard is pinned: it must not change between calls, processes or releases."""
        assert [shard_of(key, n) for n in (2, 3, 4, 10)] == expected
        assert [shard_of(key, n) for n in (2, 3, 4, 10)] == expected

    def test_shards_ignore_case(self) -> None:
        """Any spelling of a name lands in the same shard."""
        assert all(shard_of("CORP\\Web01", n) == shard_of("corp\\web01 ", n) for n in range(1, 20))

    def test_no_shard_keeps_everything(self) -> None:
        """Without --shard every key is in."""
        assert all(in_shard(key, None) for key in KEYS)

    def test_select_takes_the_shard_before_dedupe(self) -> None:
        """Machines of other shards are dropped without entering the dedupe set."""
        items: list[Machine | InvalidLine] = [Machine.from_name(k) for k in KEYS[:100] * 2]
        deduper = Deduper()

        selected = list(select_machines(items, deduper, (1, 4)))

        assert all(isinstance(m, Machine) and shard_of(m.key, 4) == 1 for m in selected)
        assert len(deduper) == len(selected) == deduper.duplicates
