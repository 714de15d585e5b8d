"""The composition root: a Config in, a collection run (or check, or machine list) out.

It builds the concrete pieces (client, sinks, journal, reporter), hands them to the pipeline
and turns the way a run ended into an exit code. It reads no environment and no argv: the
CLI passes the Config, the Credentials and the standard streams in.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import anyio
import anyio.to_thread

from collector import __version__
from collector.client import CitrixClient, open_client
from collector.config import Config, Credentials, Mode, public_dict
from collector.errors import (
    ApiError,
    CollectorError,
    ConfigError,
    FatalError,
    InputError,
    OutputError,
)
from collector.flatten import make_flattener, make_record_encoder
from collector.journal import Journal, read_journal
from collector.models import ErrorKind, Failure, InvalidLine, Machine, RunStats, machine_key
from collector.pipeline import RecordSink, Stopper, Writer, run_pipeline, utc_now
from collector.progress import (
    ProgressReporter,
    metrics_text,
    print_summary,
    summary_lines,
    write_metrics,
)
from collector.rundir import Action, RunPlan, plan_run
from collector.sinks import (
    ERRORS_NAME,
    MANIFEST_NAME,
    DirectorySink,
    ErrorLog,
    SessionFiles,
    StreamSink,
    dump_json,
    read_errors,
    write_atomic,
)
from collector.sources import (
    Deduper,
    detect_format,
    file_fingerprint,
    in_shard,
    open_machine_list,
    read_machines,
)

log = logging.getLogger("collector")

EXIT_OK, EXIT_FAILURES, EXIT_INTERRUPTED = 0, 1, 130

# Builds the stream of machines once the client exists (discovery needs it).
SourceFactory = Callable[[CitrixClient], AsyncIterator[Machine | InvalidLine]]
READ_BATCH = 2000


@dataclass(frozen=True, slots=True)
class RunOptions:
    """The flags of `collector run` that are not configuration keys."""

    resume: bool = False
    retry_failed: bool = False
    overwrite: bool = False
    strict: bool = False
    shard: tuple[int, int] | None = None
    progress: bool = True
    metrics_file: str = ""
    errors_path: str = ""  # with --out -: where failed machines go as NDJSON


@dataclass(slots=True)
class StdStreams:
    stdin: TextIO | None = None
    stdout: BinaryIO | None = None
    stderr: TextIO | None = None
    interactive: bool = False  # stderr is a terminal


@dataclass(slots=True)
class RunResult:
    exit_code: int
    stats: RunStats
    complete: bool
    output: str
    manifest: dict[str, Any] | None = None


def run_fingerprint(config: Config, options: RunOptions) -> dict[str, Any]:
    """What a resumed run must still collect alike: the machines, the mode, the record shape."""
    machines = config.input.machines
    digest = ""
    if not config.input.all_machines and machines != "-":
        digest = file_fingerprint(machines)
    return {
        "machines": "" if config.input.all_machines else machines,
        "machines_sha256": digest,
        "format": config.input.format.value,
        "column": config.input.column,
        "all_machines": config.input.all_machines,
        "delivery_group": config.input.delivery_group,
        "catalog": config.input.catalog,
        "mode": config.collect.mode.value,
        "shard": "/".join(map(str, options.shard)) if options.shard else "",
        "fields": list(config.collect.fields),
        "separator": config.output.separator,
        "arrays": config.output.arrays.value,
        "compress": config.output.compress.value,
    }


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


def build_manifest(
    *,
    plan: RunPlan,
    config: Config,
    stats: RunStats,
    complete: bool,
    started_at: str,
    failures: list[Failure],
) -> dict[str, Any]:
    """The manifest of the whole run (every segment), from the journal on disk."""
    state = read_journal(plan.directory)
    assert state is not None  # this run wrote its start line
    failed: dict[str, int] = {}
    for failure in failures:
        failed[failure.kind.value] = failed.get(failure.kind.value, 0) + 1
    return {
        "run_id": state.run_id,
        "version": __version__,
        "started_at": state.started_at,
        "segment_started_at": started_at,
        "finished_at": utc_now(),
        "complete": complete,
        "mode": config.collect.mode.value,
        "config": public_dict(config),
        "counts": {
            "machines_total": len(state.committed) + sum(failed.values()),
            "machines_ok": len(state.committed),
            "machines_failed": failed,
            "duplicates_dropped": stats.duplicates,
            "sessions": state.records,
            "requests": state.counters.get("requests", 0),
            "retries": state.counters.get("retries", 0),
            "throttled": state.counters.get("throttled", 0),
            "segments": state.segments,
        },
        "files": [f.to_manifest() for f in state.files if f.name],
    }


def collapse(group: BaseExceptionGroup[Any]) -> BaseException:
    """The error that ended a task group: a fatal one first, else the first of ours."""
    flat: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            flat.append(exc)

    walk(group)
    for kinds in ((FatalError,), (CollectorError,), (Exception,)):
        for exc in flat:
            if isinstance(exc, kinds):
                return exc
    return group


class Run:
    """One invocation of `collector run`."""

    def __init__(
        self, config: Config, credentials: Credentials, options: RunOptions, streams: StdStreams
    ) -> None:
        self.config = config
        self.credentials = credentials
        self.options = options
        self.streams = streams
        self.stats = RunStats()
        self.stopper = Stopper(grace=config.collect.request_timeout_s)
        self.signals = 0
        self.started = time.monotonic()
        self.started_at = utc_now()

    @property
    def to_stdout(self) -> bool:
        return self.config.output.dir == "-"

    async def execute(self) -> RunResult:
        config, options = self.config, self.options
        if config.collect.mode is Mode.SITE_WIDE:
            raise ConfigError(
                "site-wide mode (--site-wide, [collect] mode) is not available in this version; "
                'use mode = "per-machine"'
            )
        if self.to_stdout and (options.resume or options.retry_failed):
            raise InputError("--out - writes no journal, so it cannot --resume or --retry-failed")
        # The input is checked before the output directory is touched: a bad list must not
        # cost an --overwrite its old run, nor a --resume its leftovers.
        reads_input = not (options.retry_failed or config.input.all_machines)
        stdin = self.streams.stdin
        if reads_input:
            if options.strict:
                if config.input.machines == "-":
                    stdin = spool(stdin)  # read twice: once to check, once to collect
                check_strict(config, stdin)
                if stdin is not None and stdin is not self.streams.stdin:
                    stdin.seek(0)
            elif config.input.machines != "-":
                with open_machine_list(config.input.machines, None):
                    pass  # a missing or unreadable list is an exit 2 before any request
        plan = None
        if not self.to_stdout:
            plan = plan_run(
                Path(config.output.dir),
                resume=options.resume,
                retry_failed=options.retry_failed,
                overwrite=options.overwrite,
                fingerprint=run_fingerprint(config, options),
            )
        committed = plan.state.committed if plan and plan.state else set()
        feed = MachineFeed(self.stats, shard=options.shard, committed=committed)
        old_failures: list[Failure] = []
        if plan and plan.state:
            old_failures = read_errors(plan.directory / ERRORS_NAME)
        source: SourceFactory
        if plan and plan.action is Action.RETRY_FAILED:
            retry = iter(retry_machines(old_failures, committed))
            source = lambda client: feed.stream(retry)  # noqa: E731
        elif config.input.all_machines:
            group, catalog = config.input.delivery_group, config.input.catalog
            source = lambda client: feed.discover(client.machines(group, catalog))  # noqa: E731
        else:
            items = iter_input(config, stdin)
            feed.estimate = count_lines(config.input.machines)
            source = lambda client: feed.stream(items)  # noqa: E731
        return await self._collect(plan, feed, source, old_failures)

    async def _collect(
        self,
        plan: RunPlan | None,
        feed: MachineFeed,
        source: SourceFactory,
        old_failures: list[Failure],
    ) -> RunResult:
        config = self.config
        async with open_client(config, self.credentials, self.stats) as client:
            # The first call: a wrong secret or a refused site stops the run here (exit 3).
            site_id = await client.resolve_site_id()
            run_id = plan.state.run_id if plan and plan.state else str(uuid.uuid4())
            encode = make_record_encoder(
                make_flattener(config.output.separator, config.output.arrays),
                run_id=run_id,
                site_id=site_id,
            )
            journal, sink, files, errors = self._open_output(plan, run_id)
            writer = Writer(sink, encode, self.stats)
            reporter = ProgressReporter(
                self.stats,
                total=feed.total,
                interactive=self.options.progress and self.streams.interactive,
                stream=self.streams.stderr,
            )
            fatal: BaseException | None = None
            try:
                async with anyio.create_task_group() as group:
                    group.start_soon(self._watch_signals)
                    if self.options.progress:
                        group.start_soon(reporter.run)
                    await run_pipeline(
                        source(client),
                        client,
                        writer,
                        concurrency=config.collect.concurrency,
                        stopper=self.stopper,
                    )
                    group.cancel_scope.cancel()
            except BaseExceptionGroup as group_error:
                fatal = collapse(group_error)
            except CollectorError as exc:
                fatal = exc
        complete = fatal is None and not self.stopper.stopping
        return self._finish(plan, journal, files, errors, old_failures, complete, fatal)

    def _open_output(
        self, plan: RunPlan | None, run_id: str
    ) -> tuple[Journal | None, RecordSink, SessionFiles | None, ErrorLog | None]:
        config = self.config
        if plan is None:
            errors = None
            if self.options.errors_path:
                errors = ErrorLog(Path(self.options.errors_path), staged=False)
            assert self.streams.stdout is not None
            return None, StreamSink(self.streams.stdout, errors), None, errors
        journal = Journal(plan.directory)
        if plan.state is None:
            journal.append(
                {
                    "t": "start",
                    "run_id": run_id,
                    "version": __version__,
                    "started_at": self.started_at,
                    "fingerprint": run_fingerprint(config, self.options),
                }
            )
        else:
            journal.append({"t": plan.action.value, "at": self.started_at})
        next_number = plan.state.next_file_number if plan.state else 1
        files = SessionFiles(
            plan.directory,
            compress=config.output.compress,
            max_records=config.output.max_records_per_file,
            next_number=next_number,
            on_commit=lambda committed: journal.record_commit(committed, utc_now()),
        )
        errors = ErrorLog(plan.directory / ERRORS_NAME, staged=True)
        return journal, DirectorySink(files, errors, journal), files, errors

    def _finish(
        self,
        plan: RunPlan | None,
        journal: Journal | None,
        files: SessionFiles | None,
        errors: ErrorLog | None,
        old_failures: list[Failure],
        complete: bool,
        fatal: BaseException | None,
    ) -> RunResult:
        """Commit what was collected, then write errors, journal end, manifest and metrics."""
        stats = self.stats
        manifest = None
        if files is not None:
            if isinstance(fatal, OutputError):
                files.abandon()
            else:
                try:
                    files.commit()
                except OutputError as exc:
                    files.abandon()
                    fatal = fatal or exc
        failures: list[Failure] = []
        if errors is not None:
            failures = self._final_failures(plan, errors, old_failures)
            if plan is not None:
                kept = failures[: len(failures) - len(errors.failures)]
                try:
                    errors.finish(kept)
                except OutputError as exc:
                    fatal = fatal or exc
            else:
                errors.finish()
        if journal is not None and plan is not None:
            try:
                journal.append(
                    {
                        "t": "end",
                        "at": utc_now(),
                        "complete": complete,
                        "counters": {
                            "requests": stats.requests,
                            "retries": stats.retries,
                            "throttled": stats.throttled,
                            "token_requests": stats.token_requests,
                        },
                    }
                )
                journal.close()
                manifest = build_manifest(
                    plan=plan,
                    config=self.config,
                    stats=stats,
                    complete=complete,
                    started_at=self.started_at,
                    failures=failures,
                )
                write_atomic(plan.directory / MANIFEST_NAME, dump_json(manifest))
            except OutputError as exc:
                fatal = fatal or exc
        exit_code = self._exit_code(fatal, len(failures) if plan else stats.machines_failed)
        duration = time.monotonic() - self.started
        output = "standard output" if plan is None else str(plan.directory)
        if self.options.metrics_file:
            text = metrics_text(stats, duration_s=duration, exit_code=exit_code, complete=complete)
            try:
                write_metrics(Path(self.options.metrics_file), text)
            except OutputError as exc:
                log.error("%s", exc)
        print_summary(
            summary_lines(
                stats, duration_s=duration, output=output, complete=complete, exit_code=exit_code
            ),
            self.streams.stderr,
        )
        if fatal is not None:
            raise fatal
        return RunResult(exit_code, stats, complete, output, manifest)

    def _final_failures(
        self, plan: RunPlan | None, errors: ErrorLog, old: list[Failure]
    ) -> list[Failure]:
        """Failures still standing: earlier ones not settled by this run, then this run's."""
        if plan is None or plan.state is None:
            return list(errors.failures)
        state = read_journal(plan.directory)
        committed = state.committed if state else set()
        retried = {machine_key(f.machine) for f in errors.failures}
        reread = plan.action is Action.RESUME  # the input was read again: its bad lines are new
        kept = [
            f
            for f in old
            if machine_key(f.machine) not in committed
            and machine_key(f.machine) not in retried
            and not (reread and f.kind is ErrorKind.INVALID_INPUT)
        ]
        return kept + list(errors.failures)

    def _exit_code(self, fatal: BaseException | None, failures: int) -> int:
        if fatal is not None:
            return fatal.exit_code if isinstance(fatal, CollectorError) else FatalError.exit_code
        if self.stopper.stopping:
            return EXIT_INTERRUPTED
        return EXIT_FAILURES if failures else EXIT_OK

    async def _watch_signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as received:
            async for signum in received:
                self.signals += 1
                if self.signals > 1:
                    # The journal names only whole files, so leaving now is still resumable.
                    log.error("second signal: exiting at once; run again with --resume")
                    os._exit(EXIT_INTERRUPTED)
                log.warning(
                    "%s: no new machines; finishing the requests in flight (at most %.0f s), "
                    "then committing. Send it again to exit at once.",
                    signal.Signals(signum).name,
                    self.stopper.grace,
                )
                self.stopper.stop()


async def run(
    config: Config, credentials: Credentials, options: RunOptions, streams: StdStreams
) -> RunResult:
    """Run one collection. Raises `CollectorError` subclasses for exits 2 and 3."""
    return await Run(config, credentials, options, streams).execute()
