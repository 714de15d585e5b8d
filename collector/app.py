"""The composition root: a Config in, a collection run (or check, or machine list) out.

It builds the concrete pieces (client, sinks, journal, reporter), hands them to the pipeline
and turns the way a run ended into an exit code. It reads no environment and no argv: the
CLI passes the Config, the Credentials and the standard streams in.
"""

from __future__ import annotations

import logging
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import anyio

from collector import __version__
from collector.client import CitrixClient
from collector.config import Config, Credentials, Mode
from collector.connect import open_client
from collector.errors import (
    CollectorError,
    FatalError,
    InputError,
    OutputError,
)
from collector.feed import (
    MachineFeed,
    check_strict,
    count_lines,
    iter_input,
    retry_machines,
    spool,
)
from collector.flatten import make_flattener, make_record_encoder
from collector.journal import Journal, read_journal
from collector.manifest import build_manifest
from collector.models import ErrorKind, Failure, InvalidLine, Machine, RunStats, machine_key
from collector.pipeline import RecordSink, Stopper, Writer, run_pipeline, utc_now
from collector.progress import (
    ListingProgress,
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
from collector.sitewide import SiteListing, check_fields, open_listing_output
from collector.sources import (
    file_fingerprint,
    open_machine_list,
)

log = logging.getLogger("collector")

EXIT_OK, EXIT_FAILURES, EXIT_INTERRUPTED = 0, 1, 130

# Builds the stream of machines once the client exists (discovery needs it).
SourceFactory = Callable[[CitrixClient], AsyncIterator[Machine | InvalidLine]]


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
            check_fields(config.collect.fields)
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
            site_wide = config.collect.mode is Mode.SITE_WIDE
            listing = ListingProgress() if site_wide else None
            reporter = ProgressReporter(
                self.stats,
                total=feed.total,
                interactive=self.options.progress and self.streams.interactive,
                stream=self.streams.stderr,
                listing=listing,
            )
            fatal: BaseException | None = None
            try:
                async with anyio.create_task_group() as group:
                    group.start_soon(self._watch_signals)
                    if self.options.progress:
                        group.start_soon(reporter.run)
                    if listing is not None:
                        await self._list_site(
                            plan, client, writer, feed, source, listing, files, journal
                        )
                    else:
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

    async def _list_site(
        self,
        plan: RunPlan | None,
        client: CitrixClient,
        writer: Writer,
        feed: MachineFeed,
        source: SourceFactory,
        listing: ListingProgress,
        files: SessionFiles | None,
        journal: Journal | None,
    ) -> None:
        """Site-wide mode (SPEC 5.5): one listing of the site instead of a call a machine."""
        inputs = self.config.input
        retry = plan is not None and plan.action is Action.RETRY_FAILED
        discover = inputs.all_machines and not retry
        await SiteListing(
            client,
            writer,
            feed,
            open_listing_output(files, journal, writer.sink),
            self.stopper,
            listing,
            machines=None if discover else source(client),
            delivery_group=inputs.delivery_group if discover else "",
            catalog=inputs.catalog if discover else "",
        ).run()

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
        state = None
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
            except OutputError as exc:
                fatal = fatal or exc
            try:
                state = read_journal(plan.directory)  # once: for the failures and the manifest
            except OutputError as exc:
                fatal = fatal or exc
        failures: list[Failure] = []
        if errors is not None:
            committed = state.committed if state else set()
            failures = self._final_failures(plan, errors, old_failures, committed)
            if plan is not None:
                kept = failures[: len(failures) - len(errors.failures)]
                try:
                    errors.finish(kept)
                except OutputError as exc:
                    fatal = fatal or exc
            else:
                errors.finish()
        if state is not None and plan is not None:
            manifest = build_manifest(
                state=state,
                config=self.config,
                stats=stats,
                complete=complete,
                started_at=self.started_at,
                failures=failures,
            )
            try:
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
        self, plan: RunPlan | None, errors: ErrorLog, old: list[Failure], committed: set[str]
    ) -> list[Failure]:
        """Failures still standing: earlier ones not settled by this run, then this run's."""
        if plan is None or plan.state is None:
            return list(errors.failures)
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
