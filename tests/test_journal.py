"""The commit journal: read back, torn last lines recovered, damage refused, counts folded."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import orjson
import pytest

from collector.errors import ConfigError, OutputError
from collector.journal import (
    Journal,
    commit_entry,
    fold_counters,
    parse_journal,
    read_journal,
)
from collector.models import key_digest
from collector.sinks import MachineKeys, SessionFile


def digests(*keys: str) -> set[bytes]:
    return {key_digest(k) for k in keys}


PATH = Path("out/journal.ndjson")
START: dict[str, Any] = {"t": "start", "run_id": "r1", "started_at": "t0", "fingerprint": {"a": 1}}
FILE_1 = SessionFile("sessions-00001.ndjson", 3, 30, "h1")
FILE_2 = SessionFile("sessions-00002.ndjson", 2, 20, "h2")


def line(entry: dict[str, Any]) -> bytes:
    return orjson.dumps(entry) + b"\n"


def journal_bytes(*entries: dict[str, Any]) -> bytes:
    return b"".join(map(line, entries))


WHOLE = journal_bytes(START, commit_entry([FILE_1], MachineKeys.of(["a", "b"]), "t1"))


def test_commits_read_back_and_numbering_continues() -> None:
    """Committed machines and files are read back, and numbering continues after them."""
    raw = WHOLE + line(commit_entry([], MachineKeys.of(["c"]), "t2"))

    state = parse_journal(raw, PATH)

    assert state.run_id == "r1"
    assert set(state.committed) == digests("a", "b", "c")
    assert state.files == [FILE_1]
    assert state.next_file_number == 2
    assert state.records == 3
    assert state.length == len(raw)


def test_one_commit_may_name_several_files() -> None:
    """A unit of work spanning files (a site-wide listing) is one commit of all of them."""
    state = parse_journal(
        journal_bytes(START, commit_entry([FILE_1, FILE_2], MachineKeys.of(["x"]), "t")), PATH
    )

    assert state.files == [FILE_1, FILE_2]
    assert state.next_file_number == 3


def test_journals_of_the_first_version_still_read() -> None:
    """A commit line naming one `file` (or none, for idle machines) reads as before."""
    old = {"t": "commit", "file": "sessions-00001.ndjson", "records": 3, "bytes": 30}
    raw = journal_bytes(
        START,
        old | {"sha256": "h1", "machines": ["a"]},
        {"t": "commit", "file": None, "records": 0, "bytes": 0, "sha256": "", "machines": ["b"]},
    )

    state = parse_journal(raw, PATH)

    assert state.files == [FILE_1]
    assert set(state.committed) == digests("a", "b")


@pytest.mark.parametrize(
    "tail",
    [
        pytest.param(b'{"t":"commit","files":[{"name":"sessions-00002.nd', id="cut-mid-line"),
        pytest.param(
            orjson.dumps(commit_entry([FILE_2], MachineKeys.of(["z"]), "t3")), id="no-final-newline"
        ),
        pytest.param(b'{"t":"comm{"t":"resume","at":"t4"}\n', id="glued-onto-a-torn-line"),
    ],
)
def test_a_torn_last_line_commits_nothing(tail: bytes) -> None:
    """A last line cut short, or without its newline, is left out: the length stops before it."""
    state = parse_journal(WHOLE + tail, PATH)

    assert set(state.committed) == digests("a", "b")
    assert state.files == [FILE_1]
    assert state.length == len(WHOLE)


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        pytest.param(b"not json at all\n", "not JSON", id="not-json"),
        pytest.param(b"[1, 2]\n", "not a JSON object", id="not-an-object"),
        pytest.param(b'{"t": "commit", "files": []}\n', "no 'machines' field", id="no-machines"),
        pytest.param(b"\n", "not JSON", id="blank"),
        pytest.param(b"{}\n", "an entry of unknown kind None", id="no-kind"),
    ],
)
def test_a_bad_line_before_the_last_is_refused_naming_it(bad: bytes, reason: str) -> None:
    """Damage with whole lines after it is not a crash: refused, naming the file and line."""
    raw = WHOLE + bad + line({"t": "end", "complete": True, "counters": {}})

    with pytest.raises(
        OutputError, match=rf"journal\.ndjson:3: the journal is damaged \({reason}\)"
    ):
        parse_journal(raw, PATH)


def test_a_foreign_file_is_refused() -> None:
    """A journal.ndjson that is not ours is an error naming the file."""
    with pytest.raises(ConfigError, match=r"journal\.ndjson:1: not a collector journal"):
        parse_journal(b'{"hello": 1}\n', PATH)


def test_no_journal_is_none(tmp_path: Path) -> None:
    """A directory without a journal holds no run."""
    assert read_journal(tmp_path) is None


def test_a_segment_ends_complete_until_another_begins() -> None:
    """`complete` is the last end line's, and a resume line after it resets it."""
    ended = journal_bytes(START, {"t": "end", "complete": True, "counters": {}})

    assert parse_journal(ended, PATH).complete is True
    assert parse_journal(ended + line({"t": "resume", "at": "t5"}), PATH).complete is False


def test_opening_at_the_whole_length_cuts_the_torn_tail(tmp_path: Path) -> None:
    """The next entry starts on a line of its own: nothing is glued onto a partial line."""
    (tmp_path / "journal.ndjson").write_bytes(WHOLE + b'{"t":"commit","fi')
    state = read_journal(tmp_path)
    assert state is not None

    journal = Journal(tmp_path, length=state.length)
    journal.append({"t": "resume", "at": "t6"})
    journal.close()

    assert (tmp_path / "journal.ndjson").read_bytes() == WHOLE + line({"t": "resume", "at": "t6"})


@pytest.mark.parametrize(
    ("files", "keys"),
    [
        pytest.param([FILE_1, FILE_2], ["a", 'q"uo\\te', "é"], id="files-and-odd-keys"),
        pytest.param([], [], id="nothing"),
    ],
)
def test_a_commit_written_in_parts_is_the_entry_byte_for_byte(
    tmp_path: Path, files: list[SessionFile], keys: list[str]
) -> None:
    """`append_commit` writes exactly the line `append(commit_entry(...))` would."""
    machines = MachineKeys.of(keys)
    journal = Journal(tmp_path)

    journal.append_commit(files, machines, "t7")
    journal.close()

    written = (tmp_path / "journal.ndjson").read_bytes()
    assert written == line(commit_entry(files, machines, "t7"))
    assert orjson.loads(written)["machines"] == keys


def test_the_journal_is_private_under_umask_022(tmp_path: Path) -> None:
    """journal.ndjson grants nothing to others, whatever the umask."""
    old = os.umask(0o022)
    try:
        Journal(tmp_path).close()
    finally:
        os.umask(old)

    mode = stat.S_IMODE((tmp_path / "journal.ndjson").stat().st_mode)
    assert mode & ~0o660 == 0


@pytest.mark.parametrize(
    ("total", "segment", "folded"),
    [
        pytest.param({"requests": 5}, {"requests": 3}, {"requests": 8}, id="requests-add-up"),
        pytest.param({"retries": 1}, {"throttled": 2}, {"retries": 1, "throttled": 2}, id="new"),
        pytest.param({"duplicates": 4}, {"duplicates": 4}, {"duplicates": 4}, id="dupes-reread"),
        pytest.param({"duplicates": 2}, {"duplicates": 4}, {"duplicates": 4}, id="dupes-largest"),
    ],
)
def test_counters_fold_over_segments(
    total: dict[str, int], segment: dict[str, int], folded: dict[str, int]
) -> None:
    """Requests of each segment add up; duplicates, seen again on each reread, do not."""
    assert fold_counters(total, segment) == folded
