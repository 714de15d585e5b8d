"""The site-wide listing driven through its Protocols: fakes for the API, real files and journal."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import orjson
import pytest

from collector.config import Config, OutputConfig
from collector.errors import ApiError, ConfigError
from collector.feed import MachineFeed
from collector.flatten import make_flattener, make_record_encoder
from collector.journal import read_journal
from collector.models import ErrorKind, Failure, Machine, RunStats, key_digest
from collector.pipeline import Stopper, Writer
from collector.progress import ListingProgress, ProgressReporter
from collector.rundir import RunLedger, plan_run, run_files
from collector.sinks import PART
from collector.sitewide import ListingFiles, SiteListing, check_fields


def machine(n: int, sessions: int = 1) -> dict[str, Any]:
    return {
        "Id": f"id-{n}",
        "Name": f"CORP\\VDA-{n}",
        "DnsName": f"vda-{n}.corp.example",
        "SessionCount": sessions,
    }


def session(n: int, k: int) -> dict[str, Any]:
    return {"Id": f"s-{n}-{k}", "Machine": machine(n)}


@dataclass
class FakeSite:
    """Machines 0..N-1, machine n with n % 3 sessions, listed `page` items at a time."""

    count: int = 10
    page: int = 4
    fail_session_page: int | None = None  # this page (1-based) raises
    calls: list[str] = field(default_factory=list)

    def all_sessions(self) -> list[dict[str, Any]]:
        return [session(n, k) for n in range(self.count) for k in range(n % 3)]

    async def machines(
        self, delivery_group: str = "", catalog: str = ""
    ) -> AsyncIterator[list[dict[str, Any]]]:
        items = [machine(n, n % 3) for n in range(self.count)]
        for start in range(0, len(items), self.page):
            self.calls.append("machines")
            yield items[start : start + self.page]

    async def site_sessions(self) -> AsyncIterator[list[dict[str, Any]]]:
        items = self.all_sessions()
        for number, start in enumerate(range(0, len(items), self.page), start=1):
            self.calls.append("sessions")
            if number == self.fail_session_page:
                raise ApiError("HTTP 503", kind=ErrorKind.SERVER_ERROR, status=503)
            yield items[start : start + self.page]
            await anyio.lowlevel.checkpoint()


@dataclass
class MemorySink:
    failures: list[Failure] = field(default_factory=list)

    def write_sessions(self, machine_key: str, data: bytes, records: int) -> None:
        raise AssertionError("a directory listing writes through ListingFiles")

    def write_failure(self, failure: Failure) -> None:
        self.failures.append(failure)

    def flush(self) -> None:
        pass


CONFIG = Config(output=OutputConfig(max_records_per_file=3))


def open_ledger(directory: Path, *, resume: bool = False) -> RunLedger:
    plan = plan_run(directory, resume=resume, retry_failed=False, overwrite=False, fingerprint={})
    return RunLedger.open(plan, config=CONFIG, started_at="t")


@dataclass
class Harness:
    directory: Path
    stats: RunStats = field(default_factory=RunStats)
    sink: MemorySink = field(default_factory=MemorySink)
    progress: ListingProgress = field(default_factory=ListingProgress)

    def __post_init__(self) -> None:
        self.ledger = open_ledger(self.directory)
        self.files = self.ledger.files

    def listing(self, site: FakeSite, machines: list[str] | None, **kw: Any) -> SiteListing:
        encode = make_record_encoder(make_flattener(), run_id="r", site_id="site")
        feed = MachineFeed(self.stats, shard=None, committed=set())
        return SiteListing(
            site,
            Writer(self.sink, encode, self.stats),
            feed,
            ListingFiles(self.ledger),
            Stopper(grace=1),
            self.progress,
            machines=None
            if machines is None
            else feed.stream(iter(map(Machine.from_name, machines))),
            **kw,
        )

    def close(self) -> None:
        self.files.abandon()
        self.ledger.errors.finish()
        self.ledger.journal.close()

    def records(self) -> list[dict[str, Any]]:
        out = []
        for path in sorted(self.directory.glob("sessions-*.ndjson")):
            out += [orjson.loads(line) for line in path.read_bytes().splitlines()]
        return out


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    """A run directory with its journal and files, closed after the test."""
    made = Harness(tmp_path)
    yield made
    made.close()


async def test_a_listing_is_committed_by_one_journal_line(tmp_path: Path, harness: Harness) -> None:
    """Files rotate as they fill, and a single `commit` line names them and every machine."""
    h, site = harness, FakeSite()

    await h.listing(site, ["corp\\vda-1", "VDA-2.CORP.EXAMPLE", "id-5", "id-3"]).run()

    lines = [orjson.loads(x) for x in (tmp_path / "journal.ndjson").read_bytes().splitlines()]
    assert [x["t"] for x in lines] == ["start", "commit"]
    state = read_journal(tmp_path)
    assert state is not None
    assert set(state.committed) == set(
        map(key_digest, ["corp\\vda-1", "vda-2.corp.example", "id-5", "id-3"])
    )
    assert [f.name for f in state.files] == ["sessions-00001.ndjson", "sessions-00002.ndjson"]
    assert {r["Id"] for r in h.records()} == {"s-1-0", "s-2-0", "s-2-1", "s-5-0", "s-5-1"}
    assert h.stats.machines_ok == 4
    assert h.stats.sessions == 5
    assert h.files.number == 3  # the run's files number on after the listing


async def test_machines_the_site_lacks_are_not_found(tmp_path: Path, harness: Harness) -> None:
    """A listed machine missing from the machine listing is a not_found failure."""
    h, site = harness, FakeSite()

    await h.listing(site, ["CORP\\VDA-1", "CORP\\GHOST"]).run()

    assert [(f.machine, f.kind) for f in h.sink.failures] == [("CORP\\GHOST", ErrorKind.NOT_FOUND)]
    assert h.stats.machines_ok == 1


async def test_no_listed_machine_in_the_site_skips_the_sessions_listing(
    tmp_path: Path, harness: Harness
) -> None:
    """When the machine listing finds none of the list, no session page is read."""
    h, site = harness, FakeSite()

    await h.listing(site, ["CORP\\GHOST"]).run()

    assert "sessions" not in site.calls
    assert h.stats.failed == {"not_found": 1}


async def test_a_page_that_fails_fails_the_listing_and_keeps_nothing(
    tmp_path: Path, harness: Harness
) -> None:
    """Every found machine fails with the page's kind; no session file stays, nothing journaled."""
    h, site = harness, FakeSite(fail_session_page=3)

    await h.listing(site, None).run()

    assert {f.kind for f in h.sink.failures} == {ErrorKind.SERVER_ERROR}
    assert len(h.sink.failures) == 10
    assert not list(tmp_path.glob("sessions-*"))
    state = read_journal(tmp_path)
    assert state is not None and not state.committed


async def test_all_machines_keeps_every_session_under_its_machine_name(
    tmp_path: Path, harness: Harness
) -> None:
    """Discovery names each machine by Name; every session of the site is written once."""
    h, site = harness, FakeSite()

    await h.listing(site, None).run()

    records = h.records()
    assert sorted(r["Id"] for r in records) == sorted(s["Id"] for s in site.all_sessions())
    assert {r["_machine"] for r in records} == {f"CORP\\VDA-{n}" for n in range(10) if n % 3}
    assert h.stats.machines_ok == 10
    assert h.progress.sessions_expected == len(site.all_sessions())
    assert h.stats.session_pages == 3


def test_resume_deletes_the_renamed_files_of_an_uncommitted_listing(
    tmp_path: Path, harness: Harness
) -> None:
    """Files renamed by a listing whose journal line never came are orphans on resume."""
    h = harness
    files = ListingFiles(h.ledger)
    for n in range(4):
        files.add(f"m{n}", b'{"Id": 1}\n' * 2, 2)  # rotates every 3 records: 2 files renamed
    h.close()

    resumed = open_ledger(tmp_path, resume=True)
    resumed.errors.finish()
    resumed.journal.close()

    assert not [p for p in run_files(tmp_path) if p.name.startswith("sessions-")]


def test_discard_deletes_the_part_and_the_renamed_files(tmp_path: Path, harness: Harness) -> None:
    """A listing given up deletes its files at once, renamed or not."""
    h = harness
    files = ListingFiles(h.ledger)
    files.add("a", b'{"Id": 1}\n' * 3, 3)
    files.add("b", b'{"Id": 2}\n', 1)
    assert (tmp_path / "sessions-00001.ndjson").exists()
    assert (tmp_path / ("sessions-00002.ndjson" + PART)).exists()

    files.discard()

    assert not [p for p in tmp_path.iterdir() if p.name.startswith("sessions-")]


@pytest.mark.parametrize(
    ("expected", "text"),
    [
        pytest.param(None, "sessions listed 7,", id="unknown-total"),
        pytest.param(20, "sessions listed 7/20,", id="known-total"),
    ],
)
def test_the_progress_line_shows_pages_and_sessions(expected: int | None, text: str) -> None:
    """Site-wide progress names the pages read and the sessions listed of those expected."""
    listing = ListingProgress(sessions_seen=7)
    listing.sessions_expected = expected
    stats = RunStats(machine_pages=1, session_pages=2)
    reporter = ProgressReporter(stats, total=lambda: None, interactive=False, listing=listing)

    line = reporter.line()

    assert line.startswith("pages 2 of sessions and 1 of machines")
    assert text in line
    assert reporter.bar_position() == (7, expected, "sessions listed")


@pytest.mark.parametrize(
    ("fields", "refused"),
    [
        pytest.param((), False, id="no-projection"),
        pytest.param(("Id", "machine"), False, id="with-machine"),
        pytest.param(("Id", "UserName"), True, id="without-machine"),
    ],
)
def test_a_projection_must_keep_the_machine(fields: tuple[str, ...], refused: bool) -> None:
    """Without Machine no session could be matched: the configuration is refused, naming it."""
    if refused:
        with pytest.raises(ConfigError, match=r"\[collect\] fields .* add \"Machine\""):
            check_fields(fields)
    else:
        check_fields(fields)
