"""What a run collects: the machine list read, checked, deduplicated, sharded and resumed.

`MachineFeed` turns the input (a file or standard input, the API's machine list, or the
machines of `errors.ndjson`) into the stream of machines the workers take, dropping
duplicates, other shards' machines and machines an earlier run already committed. Memory
holds the dedupe keys, never the list: files and pipes are read in a worker thread, in
batches, as the workers need them.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterable, Iterator
from itertools import islice
from typing import Any, TextIO

import anyio
import anyio.to_thread

from collector.config import Config
from collector.errors import ApiError, FatalError, InputError
from collector.models import ErrorKind, Failure, InvalidLine, Machine, RunStats, machine_key
from collector.sources import Deduper, detect_format, in_shard, open_machine_list, read_machines

READ_BATCH = 2000


def iter_input(config: Config, stdin: TextIO | None) -> Iterator[Machine | InvalidLine]:
    """Every line of the machine list, parsed (the file stays open only while iterating)."""
    path = config.input.machines
    fmt = detect_format(path, config.input.format)
    with open_machine_list(path, stdin) as (lines, source):
        yield from read_machines(lines, fmt=fmt, column=config.input.column, source=source)


def spool(stdin: TextIO | None) -> TextIO | None:
    """Standard input copied to a temporary file, so that it can be read twice."""
    if stdin is None:
        return None
    copy = tempfile.TemporaryFile("w+", encoding="utf-8", errors="surrogateescape")  # noqa: SIM115
    shutil.copyfileobj(stdin, copy)
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
    """Turns the input into the machines to collect: dedupe, shard, skip what is committed."""

    def __init__(
        self,
        stats: RunStats,
        *,
        shard: tuple[int, int] | None,
        committed: set[str],
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
        if not self.deduper.add(machine):
            self.stats.duplicates += 1
            return False
        if not in_shard(machine.key, self.shard):
            return False
        if machine.key in self.committed:
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

        Raises `FatalError` if a page cannot be had after every retry: the machines found so
        far are collected and committed, and `--resume` carries on from there.
        """
        self.stats.discovery_done = False
        try:
            async for page in pages:
                for listed in page:
                    name = listed.get("Name") or listed.get("DnsName") or listed.get("Id")
                    if name:
                        machine = Machine.from_name(str(name), source="discovery")
                        if self.accept(machine):
                            yield machine
        except ApiError as exc:
            raise FatalError(
                f"machine discovery stopped after {self.stats.machines_total} machines: "
                f"{exc.message} (transaction {exc.transaction_id}); the machines found so far "
                "are kept: run again with --resume"
            ) from exc
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


def retry_machines(failures: Iterable[Failure], committed: set[str]) -> list[Machine]:
    """The machines `--retry-failed` collects again: failed, not invalid input, not committed."""
    seen: set[str] = set()
    machines = []
    for failure in failures:
        key = machine_key(failure.machine)
        if failure.kind is ErrorKind.INVALID_INPUT or key in committed or key in seen:
            continue
        seen.add(key)
        machines.append(Machine.from_name(failure.machine, source="errors.ndjson"))
    return machines
