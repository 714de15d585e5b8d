"""Site-wide mode (SPEC 5.5): the whole site's sessions in about sessions/1000 calls.

One listing is one unit of work. The machine list is read into a `MachineIndex` (digests
and names, never records); the machine listing (`/cvad/manage/Machines`, paged) tells which
listed machines the site has; then every page of `/cvad/manage/Sessions` is matched against
the index and its kept sessions stream into `.part` files, renamed as they fill. After the
last page, one journal `commit` line commits every file and every machine at once.

Until that line exists nothing of the listing counts: a stop, a failed page or a fatal error
deletes the listing's files at once, and after a `kill -9` `--resume` deletes them as orphans
(renamed, never journaled) and reads the listing again. So a run never mixes two snapshots
of the site, and memory holds one page plus the keys.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any, Protocol

from collector.errors import ApiError, ConfigError
from collector.feed import MachineFeed
from collector.matching import MachineIndex, listed_name
from collector.models import ErrorKind, Failed, Failure, InvalidLine, Machine, machine_key
from collector.pipeline import RecordSink, Stopper, Writer, utc_now
from collector.progress import ListingProgress
from collector.rundir import RunLedger
from collector.sinks import PART, MachineKeys, SessionFile

log = logging.getLogger("collector.sitewide")

MACHINES_LISTING = "/cvad/manage/Machines"
SESSIONS_LISTING = "/cvad/manage/Sessions"


class ListingApi(Protocol):
    """**Protocol:** the two paged listings a site-wide run reads (`CitrixClient` has them).

    Each raises `ApiError` for a page that fails for good, or repeats its continuation token.
    """

    def machines(
        self, delivery_group: str = "", catalog: str = ""
    ) -> AsyncIterator[list[dict[str, Any]]]: ...

    def site_sessions(self) -> AsyncIterator[list[dict[str, Any]]]: ...


class ListingOutput(Protocol):
    """**Protocol:** where a listing's records go until the listing is committed or dropped."""

    def add(self, key: str, data: bytes, records: int) -> None: ...

    def commit(self, machines: list[str]) -> None: ...

    def discard(self) -> None: ...


class ListingFiles:
    """A listing's session files: renamed as they fill, journaled together by `commit`.

    The listing writes through the run's own `SessionFiles`, so numbering goes on from the
    run's files; only the journal line waits for the listing's end (`RunLedger.commit`).
    """

    def __init__(self, ledger: RunLedger) -> None:
        self.ledger = ledger
        self.files = ledger.files
        self.renamed: list[SessionFile] = []  # renamed, not yet journaled

    def add(self, key: str, data: bytes, records: int) -> None:
        self.files.write(data, records)
        if self.files.is_full:
            self._finish_file()

    def commit(self, machines: list[str]) -> None:
        """Rename the last file, then commit the whole listing with one journal line."""
        self._finish_file()
        self.ledger.commit(self.renamed, MachineKeys.of(machines))
        self.renamed = []

    def discard(self) -> None:
        """Delete the listing's files: the open `.part` and those renamed but not journaled."""
        self.files.abandon()
        directory = self.files.directory
        paths = [directory / (self.files.current_name + PART)]
        paths += [directory / f.name for f in self.renamed]
        for path in paths:
            with contextlib.suppress(OSError):  # whatever is left, --resume deletes
                path.unlink()
        self.renamed = []

    def _finish_file(self) -> None:
        finished = self.files.finish_file()
        if finished is not None:
            self.renamed.append(finished)


class ListingStream:
    """A listing on standard output (`--out -`): records go out as they come."""

    def __init__(self, sink: RecordSink) -> None:
        self.sink = sink

    def add(self, key: str, data: bytes, records: int) -> None:
        self.sink.write_sessions(key, data, records)

    def commit(self, machines: list[str]) -> None:
        self.sink.flush()

    def discard(self) -> None:
        """Nothing to take back: a stream has no journal, so such a run is never resumed."""


class RunSink(Protocol):
    """**Protocol:** a run's output, as the listing sees it (`app.RunOutput`)."""

    @property
    def sink(self) -> RecordSink: ...


def open_listing_output(output: RunSink) -> ListingOutput:
    """The listing's files in a directory run, else the run's stream (`--out -`)."""
    if isinstance(output, RunLedger):
        return ListingFiles(output)
    return ListingStream(output.sink)


def check_fields(fields: tuple[str, ...]) -> None:
    """Site-wide mode matches sessions by their `Machine`: a projection must keep it.

    Raises `ConfigError` naming the setting if `fields` is set without `Machine`.
    """
    if fields and not any(f.strip().casefold() == "machine" for f in fields):
        raise ConfigError(
            f"[collect] fields = {list(fields)!r} leaves out Machine, which site-wide mode "
            'needs to match each session to its machine; add "Machine" to fields, or use '
            'mode = "per-machine"'
        )


def session_count(machine: dict[str, Any]) -> int:
    value = machine.get("SessionCount")
    return value if isinstance(value, int) and value > 0 else 0


class SiteListing:
    """One site-wide listing of a run: `run()` collects it whole or not at all.

    `machines` is the list to keep (already deduplicated, sharded and resumed by `feed`), or
    None with `--all-machines`: then the machine listing (of `delivery_group` or `catalog`
    if given) is the list, each machine named by its `Name`.
    """

    def __init__(
        self,
        client: ListingApi,
        writer: Writer,
        feed: MachineFeed,
        output: ListingOutput,
        stopper: Stopper,
        progress: ListingProgress,
        *,
        machines: AsyncIterator[Machine | InvalidLine] | None,
        delivery_group: str = "",
        catalog: str = "",
    ) -> None:
        self.client = client
        self.writer = writer
        self.feed = feed
        self.output = output
        self.stopper = stopper
        self.progress = progress
        self.machines = machines
        self.delivery_group = delivery_group
        self.catalog = catalog
        self.index = MachineIndex()
        self.stats = writer.stats

    @property
    def discovering(self) -> bool:
        return self.machines is None

    @property
    def whole_site(self) -> bool:
        """Every session is kept: --all-machines without a delivery group or catalog."""
        return self.discovering and not (self.delivery_group or self.catalog)

    async def run(self) -> None:
        """Collect the listing; on a stop, a failed page or any error, keep none of it.

        A page that fails for good fails the listing: its machines go to the error log with
        that page's error kind. Raises what the client raises besides `ApiError`.
        """
        committed = False
        try:
            with self.stopper.intake:  # a signal stops the listing at once: it is redone whole
                committed = await self._collect()
        finally:
            if not committed:
                self.output.discard()
                if self.stopper.stopping:
                    log.warning(
                        "the site-wide listing was stopped before its end: none of it is kept; "
                        "run again with --resume to read it again"
                    )

    async def _collect(self) -> bool:
        """Read the listing; True once nothing of it is left to discard (committed, or empty)."""
        if self.machines is not None:
            await self._read_list(self.machines)
            if not len(self.index):
                return True  # nothing to collect (an empty list, or a resume with all done)
        try:
            await self._list_machines()
        except ApiError as exc:
            self._fail(range(len(self.index)), exc, MACHINES_LISTING)
            return False
        for entry in self.index.missing():
            self.writer.handle(Failed(self._machine(entry), self._not_found(entry)))
        if not any(self.index.found):
            # No listed machine is the site's (or, resumed, every one is committed already):
            # the sessions listing would keep nothing.
            return True
        try:
            await self._list_sessions()
        except ApiError as exc:
            self._fail(self.index.present(), exc, SESSIONS_LISTING)
            return False
        self._commit()
        return True

    async def _read_list(self, machines: AsyncIterator[Machine | InvalidLine]) -> None:
        async for item in machines:
            if isinstance(item, InvalidLine):
                self.writer.handle(item)
            elif self.index.add(item.name) is None:
                # `DOMAIN|NAME` and `DOMAIN\NAME` of one machine: the API sees one key.
                self.stats.duplicates += 1
                self.stats.machines_total -= 1

    async def _list_machines(self) -> None:
        pages = (
            self.client.machines(self.delivery_group, self.catalog)
            if self.discovering
            else self.client.machines()
        )
        self.stats.discovery_done = False
        expected = 0
        async for page in pages:
            self.stats.machine_pages += 1
            for listed in page:
                entries = self._discovered(listed) if self.discovering else None
                if entries is None:
                    entries = self.index.resolve(listed)
                self.index.mark_found(entries)
                expected += session_count(listed)
        self.stats.discovery_done = True
        if not (self.delivery_group or self.catalog):
            # The sessions listing is the whole site's: its machines' SessionCount, summed.
            self.progress.sessions_expected = expected

    def _discovered(self, listed: dict[str, Any] | None) -> list[int]:
        """The entry of a machine found by discovery, added if it is this run's to collect."""
        name = listed_name(listed)
        if name is None:
            return []
        machine = Machine.from_name(name, source="discovery")
        if not self.feed.accept(machine):
            return []
        entry = self.index.add(machine.name)
        return [] if entry is None else [entry]

    async def _list_sessions(self) -> None:
        index, writer = self.index, self.writer
        async for page in self.client.site_sessions():
            collected_at = utc_now()
            self.stats.session_pages += 1
            self.progress.sessions_seen += len(page)
            kept: dict[int, list[dict[str, Any]]] = {}
            for session in page:
                listed = session.get("Machine")
                entries = index.resolve(listed)
                if not entries and self.whole_site:
                    # A machine that appeared after the machine listing: still the site's.
                    entries = self._discovered(listed)
                    index.mark_found(entries)
                for entry in entries:
                    if index.found[entry]:
                        kept.setdefault(entry, []).append(session)
            for entry, sessions in kept.items():
                name = index.names[entry]
                data = writer.encode(name, collected_at, sessions)
                self.output.add(machine_key(name), data, len(sessions))
                self.stats.sessions += len(sessions)

    def _commit(self) -> None:
        index = self.index
        machines = [machine_key(index.names[entry]) for entry in index.present()]
        self.output.commit(machines)
        self.stats.machines_ok += len(machines)

    def _machine(self, entry: int) -> Machine:
        return Machine.from_name(self.index.names[entry], source="site-wide listing")

    def _not_found(self, entry: int) -> Failure:
        return Failure(
            machine=self.index.names[entry],
            kind=ErrorKind.NOT_FOUND,
            status=404,
            message=f"the site has no such machine (not in {MACHINES_LISTING})",
            attempts=0,
            transaction_id=None,
            at=utc_now(),
        )

    def _fail(self, entries: Any, exc: ApiError, path: str) -> None:
        """Every machine of the listing not yet reported fails with the page's error."""
        message = f"the site-wide listing stopped: a page of {path} failed: {exc.message}"
        log.error(
            "%s (%s, transaction %s); nothing of the listing was kept: run again with --resume",
            message,
            exc.kind.value,
            exc.transaction_id,
        )
        at = utc_now()
        for entry in list(entries):
            failure = Failure(
                machine=self.index.names[entry],
                kind=exc.kind,
                status=exc.status,
                message=message,
                attempts=exc.attempts,
                transaction_id=exc.transaction_id,
                at=at,
            )
            self.writer.handle(Failed(self._machine(entry), failure))
