"""`collector verify`: a whole run passes; each kind of damage is named, one line each."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import orjson
import pytest

from collector.cli import main
from collector.config import Compression, Config, OutputConfig
from collector.models import RunStats
from collector.rundir import RunLedger, lock_directory, plan_run
from collector.verify import verify_run


def records(machine: str, n: int) -> bytes:
    return b"".join(
        orjson.dumps({"Id": f"{machine}-{i}", "_machine": machine}) + b"\n" for i in range(n)
    )


def make_run(
    out: Path,
    *,
    complete: bool = True,
    compress: Compression = Compression.NONE,
    extra: bytes = b"",
) -> Path:
    """A run of three machines in files of at most 4 records, made by the real ledger."""
    config = Config(output=OutputConfig(compress=compress, max_records_per_file=4))
    with lock_directory(out):
        plan = plan_run(out, resume=False, retry_failed=False, overwrite=False, fingerprint={})
        ledger = RunLedger.open(plan, config=config, started_at="t0")
        for machine, n in (("a", 3), ("b", 2), ("c", 5)):
            ledger.sink.write_sessions(machine, records(machine, n), n)
        if extra:
            ledger.sink.write_sessions("z", extra, extra.count(b"\n"))
        ledger.finish(complete=complete, abandon=False, stats=RunStats())
    return out


def problems(out: Path) -> list[str]:
    return verify_run(out).problems


def test_a_whole_run_passes(tmp_path: Path) -> None:
    """A run as the ledger writes it has no problem, its lock file included."""
    report = verify_run(make_run(tmp_path / "out"))

    assert report.problems == []
    assert (report.files, report.records) == (2, 10)


def test_gzip_records_are_counted_decompressed(tmp_path: Path) -> None:
    """With compress = gzip the records are the decompressed lines, the hash the gzip bytes."""
    out = make_run(tmp_path / "out", compress=Compression.GZIP)

    assert sorted(p.name for p in out.glob("sessions-*")) == [
        "sessions-00001.ndjson.gz",
        "sessions-00002.ndjson.gz",
    ]
    assert verify_run(out).problems == []


def test_a_changed_byte_is_named(tmp_path: Path) -> None:
    """One byte changed after the run: the file's sha256 no longer matches."""
    out = make_run(tmp_path / "out")
    path = out / "sessions-00001.ndjson"
    data = path.read_bytes().replace(b'"_machine":"a"', b'"_machine":"q"', 1)
    path.write_bytes(data)

    listed = orjson.loads((out / "manifest.json").read_bytes())["files"][0]["sha256"]
    assert problems(out) == [
        f"{path}: sha256 {hashlib.sha256(data).hexdigest()}, the manifest says {listed}: the "
        "file changed after the run; collect it again into a new directory"
    ]


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    """A file of the manifest that is gone is named."""
    out = make_run(tmp_path / "out")
    (out / "sessions-00002.ndjson").unlink()

    assert problems(out) == [f"{out / 'sessions-00002.ndjson'}: listed in the manifest but missing"]


def test_a_leftover_part_is_named(tmp_path: Path) -> None:
    """A `.part` file means a run was interrupted in this directory."""
    out = make_run(tmp_path / "out")
    (out / "sessions-00003.ndjson.part").write_bytes(b'{"Id": "x"}\n')

    assert problems(out) == [
        f"{out / 'sessions-00003.ndjson.part'}: left by an interrupted run; continue it with "
        "collector run --resume"
    ]


def test_a_duplicate_id_is_named_with_its_line(tmp_path: Path) -> None:
    """The same session Id twice in a run is named where it appears the second time."""
    out = make_run(tmp_path / "out", extra=records("a", 1))

    assert problems(out) == [
        f"{out / 'sessions-00003.ndjson'}:1: session Id a-0 appears twice in the run"
    ]


def test_a_line_that_is_not_an_object_is_named(tmp_path: Path) -> None:
    """Every line must be a JSON object."""
    out = make_run(tmp_path / "out", extra=b"[1, 2]\n")

    assert problems(out) == [f"{out / 'sessions-00003.ndjson'}:1: not a JSON object"]


def test_an_incomplete_run_is_named(tmp_path: Path) -> None:
    """A manifest with complete: false fails, saying how to finish the run."""
    out = make_run(tmp_path / "out", complete=False)

    assert problems(out) == [
        f"{out / 'manifest.json'}: the run is not complete (complete: False); continue it with "
        "collector run --resume"
    ]


def test_an_unlisted_session_file_is_named(tmp_path: Path) -> None:
    """A session file the manifest does not list does not belong to the run."""
    out = make_run(tmp_path / "out")
    (out / "sessions-00009.ndjson").write_bytes(b'{"Id": "x"}\n')

    assert problems(out) == [
        f"{out / 'sessions-00009.ndjson'}: a session file the manifest does not list"
    ]


def test_a_manifest_disagreeing_with_the_journal_is_named(tmp_path: Path) -> None:
    """The manifest's counts must be the journal's."""
    out = make_run(tmp_path / "out")
    manifest = orjson.loads((out / "manifest.json").read_bytes())
    manifest["counts"]["machines_ok"] = 4
    (out / "manifest.json").write_bytes(orjson.dumps(manifest))

    assert problems(out) == [f"{out / 'journal.ndjson'}: 3 machines committed, the manifest says 4"]


def test_a_torn_journal_is_named(tmp_path: Path) -> None:
    """A journal whose last line was cut short is named, though its whole lines agree."""
    out = make_run(tmp_path / "out")
    with open(out / "journal.ndjson", "ab") as journal:
        journal.write(b'{"t":"resume","a')

    assert problems(out) == [
        f"{out / 'journal.ndjson'}: the last line is cut short (a run was interrupted)"
    ]


def test_a_cut_gzip_file_is_named(tmp_path: Path) -> None:
    """A gzip file cut short is named as such, besides its size and hash."""
    out = make_run(tmp_path / "out", compress=Compression.GZIP)
    path = out / "sessions-00001.ndjson.gz"
    path.write_bytes(path.read_bytes()[:-12])

    assert f"{path}: the gzip stream is cut short" in problems(out)
    assert gzip.decompress((out / "sessions-00002.ndjson.gz").read_bytes())  # the other is fine


def test_a_directory_without_a_manifest_fails(tmp_path: Path) -> None:
    """No manifest: not a finished run."""
    assert problems(tmp_path) == [
        f"{tmp_path / 'manifest.json'}: missing; is this a collector output directory?"
    ]


class TestCommand:
    def test_a_whole_run_exits_0(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """`collector verify DIR` exits 0 and says the run is whole."""
        out = make_run(tmp_path / "out")

        assert main(["verify", str(out)]) == 0
        assert capsys.readouterr().out == f"{out}: whole: 2 files, 10 records\n"

    def test_problems_exit_1_one_line_each(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Each problem is one line of output, and the exit code is 1."""
        out = make_run(tmp_path / "out", complete=False)
        (out / "sessions-00002.ndjson").unlink()

        assert main(["verify", str(out)]) == 1
        lines = capsys.readouterr().out.splitlines()
        assert len(lines) == 2
        assert "not complete" in lines[0]
        assert "missing" in lines[1]
