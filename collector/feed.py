"""What a run collects: the machine list read, checked, deduplicated, sharded and resumed.

`MachineFeed` turns the input (a file or standard input, the API's machine list, or the
machines of `errors.ndjson`) into the stream of machines the workers take, dropping
duplicates, other shards' machines and machines an earlier run already committed. Memory
holds 16-byte digests of the dedupe and committed keys, in `DigestSet`s (20 to 40 bytes a
machine), never the list: files and pipes are read in a worker thread, in batches, as the
workers need them.
"""

from __future__ import annotations

import io
import itertools
import logging
import shutil
import tempfile
from collections.abc import AsyncIterator, Container, Iterable, Iterator
from itertools import islice
from typing import Any, TextIO

import anyio
import anyio.to_thread

from collector.config import Config, InputFormat
from collector.digests import DigestSet
from collector.errors import ApiError, FatalError, InputError
from collector.models import (
    ErrorKind,
    Failure,
    InvalidLine,
    Machine,
    RunStats,
    key_digest,
    machine_key,
)
from collector.sources import (
    STDIN,
    STDIN_SOURCE,
    Deduper,
    checked,
    detect_format,
    in_shard,
    open_machine_list,
    read_machines,
)

log = logging.getLogger("collector")

READ_BATCH = 2000
DISCOVERY = "discovery"  # the source of machines the API listed, in messages


def iter_input(config: Config, stdin: TextIO | None) -> Iterator[Machine | InvalidLine]:
    """Every line of the machine list, parsed (the file stays open only while iterating)."""
    path = config.input.machines
    fmt = detect_format(path, config.input.format)
    with open_machine_list(path, stdin) as (lines, source):
        yield from read_machines(lines, fmt=fmt, column=config.input.column, source=source)


def open_input(config: Config, stdin: TextIO | None) -> Iterator[Machine | InvalidLine]:
    """The machine list's entries, read up to the first one before any request is made.

    Raises `InputError` now, not once the run has started, if the list cannot be opened, if
    its CSV header has no usable column, or if it holds no machine at all (empty, or only
    blank lines, comments or a header).
    """
    items = iter_input(config, stdin)
    first = next(items, None)
    if first is None:
        path = config.input.machines
        name = STDIN_SOURCE if path == STDIN else path
        only = {
            InputFormat.CSV: "a header and blank lines",
            InputFormat.NDJSON: "blank lines",
        }.get(detect_format(path, config.input.format), "blank lines and # comments")
        raise InputError(
            f"no machine in {name}: the list is empty or holds only {only}; give one machine "
            "a line, or use --all-machines to collect every machine of the site"
        )
    return itertools.chain((first,), items)


def spool(stdin: TextIO | None) -> TextIO | None:
    """Standard input copied, byte for byte, to a temporary file, so that it can be read twice."""
    if stdin is None:
        return None
    raw = getattr(stdin, "buffer", None)
    if raw is None:  # text already (a StringIO in tests)
        copy = tempfile.TemporaryFile(  # noqa: SIM115 -- the caller closes it
            "w+", encoding="utf-8", errors="surrogateescape", newline="\n"
        )
        shutil.copyfileobj(stdin, copy)
    else:
        data = tempfile.TemporaryFile("w+b")  # noqa: SIM115 -- closed with its text layer
        shutil.copyfileobj(raw, data)
        copy = io.TextIOWrapper(data, encoding="utf-8", errors="surrogateescape", newline="\n")
    copy.seek(0)
    return copy


def check_strict(config: Config, stdin: TextIO | None) -> None:
    """With --strict: read the whole list before any request; the first bad line stops the run.

    Raises `InputError` naming the file and line.
    """
    for item in iter_input(config, stdin):
        if isinstance(item, InvalidLine):
            raise InputError(
                f"{item.where()}: {item.message} (--strict: nothing was collected; fix the "
                "line, or run without --strict to record it in errors.ndjson and go on)"
            )


async def in_batches(items: Iterator[Any], size: int = READ_BATCH) -> AsyncIterator[list[Any]]:
    """Pull `items` in a worker thread, `size` at a time, so file or pipe reads never block."""
    while True:
        batch = await anyio.to_thread.run_sync(
            lambda: list(islice(items, size)), abandon_on_cancel=True
        )
        if not batch:
            return
        yield batch


class MachineFeed:
    """Turns the input into the machines to collect: dedupe, shard, skip what is committed.

    `committed` holds the `key_digest` of each machine an earlier run committed (the journal's
    `DigestSet`).
    """

    def __init__(
        self,
        stats: RunStats,
        *,
        shard: tuple[int, int] | None,
        committed: Container[bytes],
    ) -> None:
        self.stats = stats
        self.shard = shard
        self.committed = committed
        self.deduper = Deduper()
        self.estimate: int | None = None

    def accept(self, item: Machine | InvalidLine) -> bool:
        if isinstance(item, InvalidLine):
            # A bad line is reported by one shard only: the one its text hashes to.
            return in_shard(machine_key(item.text or item.where()), self.shard)
        machine = item
        digest = key_digest(machine.key)
        if not self.deduper.add_digest(digest):
            self.stats.duplicates += 1
            return False
        if not in_shard(machine.key, self.shard):
            return False
        if digest in self.committed:
            self.stats.machines_skipped += 1
            return False
        self.stats.machines_total += 1
        return True

    async def stream(
        self, items: Iterator[Machine | InvalidLine]
    ) -> AsyncIterator[Machine | InvalidLine]:
        self.stats.discovery_done = False
        async for batch in in_batches(items):
            for item in batch:
                if self.accept(item):
                    yield item
        self.stats.discovery_done = True

    async def discover(
        self, pages: AsyncIterator[list[dict[str, Any]]]
    ) -> AsyncIterator[Machine | InvalidLine]:
        """The site's machines as the API lists them, fed to the workers page by page.

        A listed name that cannot be sent (only dots, control characters) is an invalid
        entry, not a request. An empty listing is a success, with a warning.

        Raises `FatalError` if a page cannot be had after every retry: the machines found so
        far are collected and committed, and `--resume` carries on from there.
        """
        self.stats.discovery_done = False
        listed = 0
        try:
            async for page in pages:
                for entry in page:
                    name = entry.get("Name") or entry.get("DnsName") or entry.get("Id")
                    if name:
                        listed += 1
                        item = checked(str(name), DISCOVERY, listed, str(name), "the name")
                        if self.accept(item):
                            yield item
        except ApiError as exc:
            raise FatalError(
                f"machine discovery stopped after {self.stats.machines_total} machines: "
                f"{exc.message} (transaction {exc.transaction_id}); the machines found so far "
                "are kept: run again with --resume"
            ) from exc
        if not listed:
            log.warning(
                "--all-machines: the API listed no machine, so there is nothing to collect "
                "(check [input] delivery_group and catalog if one is set)"
            )
        self.stats.discovery_done = True

    def total(self) -> int | None:
        if self.stats.discovery_done:
            return self.stats.machines_total
        return max(self.estimate or 0, self.stats.machines_total) or None


def count_lines(path: str) -> int | None:
    """A quick upper bound of the machines in a file, for the progress bar's ETA."""
    if path == "-":
        return None
    try:
        with open(path, "rb") as handle:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
    except OSError:
        return None


def retry_machines(failures: Iterable[Failure], committed: Container[bytes]) -> list[Machine]:
    """The machines `--retry-failed` collects again: failed, not invalid input, not committed.

    `committed` holds the `key_digest` of each committed machine.
    """
    seen = DigestSet()
    machines = []
    for failure in failures:
        key = key_digest(failure.machine)
        if failure.kind is ErrorKind.INVALID_INPUT or key in committed or not seen.add(key):
            continue
        machines.append(Machine.from_name(failure.machine, source="errors.ndjson"))
    return machines
