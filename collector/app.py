"""The composition root: a Config in, a collection run (or check, or machine list) out.

It builds the concrete pieces (client, the run's output, reporter), hands them to the pipeline
and turns the way a run ended into an exit code. A directory run's output is a `RunLedger`,
opened under the directory's lock once the credentials and the site are proven. It reads no
environment and no argv: the CLI passes the Config, the Credentials and the standard streams in.
"""

from __future__ import annotations

import logging
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol, TextIO

import anyio

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
    open_input,
    retry_machines,
    spool,
)
from collector.flatten import make_flattener, make_record_encoder
from collector.models import InvalidLine, Machine, RunStats
from collector.pipeline import Crew, RecordSink, Stopper, Writer, run_pipeline, utc_now
from collector.progress import ListingProgress, ProgressReporter, print_summary, summary_lines
from collector.rundir import Action, Finished, RunLedger, RunPlan, lock_directory, plan_run
from collector.sinks import ErrorLog, StreamSink
from collector.sitewide import SiteListing, check_fields, open_listing_output
from collector.sources import file_fingerprint

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


class RunOutput(Protocol):
    """**Protocol:** where a run's records go, and how it ends (`RunLedger` or `StreamOutput`)."""

    @property
    def run_id(self) -> str: ...

    @property
    def sink(self) -> RecordSink: ...

    def finish(self, *, complete: bool, abandon: bool, stats: RunStats) -> Finished: ...


class StreamOutput:
    """Records to standard output, failures to `--errors PATH` when given: nothing to resume."""

    def __init__(self, stream: BinaryIO, errors_path: str) -> None:
        self.run_id = str(uuid.uuid4())
        self.errors = ErrorLog(Path(errors_path), staged=False) if errors_path else None
        self.sink = StreamSink(stream, self.errors)

    def finish(self, *, complete: bool, abandon: bool, stats: RunStats) -> Finished:
        if self.errors is not None:
            self.errors.finish()
        return Finished(stats.machines_failed, None, None, complete)


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
        if not config.api.verify_tls:
            log.warning(
                "TLS certificates are not verified ([api] verify_tls = false): anyone on the "
                "path can read the token and the sessions; set [api] ca_bundle instead"
            )
        # The input is checked before the output directory is touched: a bad list must not
        # cost an --overwrite its old run, nor a --resume its leftovers.
        reads_input = not (options.retry_failed or config.input.all_machines)
        stdin = self.streams.stdin
        items: Iterator[Machine | InvalidLine] | None = None
        if reads_input:
            if options.strict:
                if config.input.machines == "-":
                    stdin = spool(stdin)  # read twice: once to check, once to collect
                check_strict(config, stdin)
                if stdin is not None and stdin is not self.streams.stdin:
                    stdin.seek(0)
            # A missing list, a CSV header without the column or a list without a machine is
            # an exit 2 now, before any request, with or without --strict.
            items = open_input(config, stdin)
        if self.to_stdout:
            return await self._collect(None, items)
        directory = Path(config.output.dir)
        with lock_directory(directory):  # held until the run ends, whatever happens
            plan = plan_run(
                directory,
                resume=options.resume,
                retry_failed=options.retry_failed,
                overwrite=options.overwrite,
                fingerprint=run_fingerprint(config, options),
            )
            return await self._collect(plan, items)

    def _machines(
        self, plan: RunPlan | None, items: Iterator[Machine | InvalidLine] | None
    ) -> tuple[MachineFeed, SourceFactory]:
        """The feed that counts and filters the machines, and their source."""
        config = self.config
        committed = plan.committed if plan else set()
        feed = MachineFeed(self.stats, shard=self.options.shard, committed=committed)
        source: SourceFactory
        if plan and plan.action is Action.RETRY_FAILED:
            retry = iter(retry_machines(plan.failures, committed))
            source = lambda client: feed.stream(retry)  # noqa: E731
        elif config.input.all_machines:
            group, catalog = config.input.delivery_group, config.input.catalog
            source = lambda client: feed.discover(client.machines(group, catalog))  # noqa: E731
        else:
            assert items is not None  # opened by execute, before the directory was touched
            feed.estimate = count_lines(config.input.machines)
            source = lambda client: feed.stream(items)  # noqa: E731
        return feed, source

    async def _collect(
        self, plan: RunPlan | None, items: Iterator[Machine | InvalidLine] | None
    ) -> RunResult:
        config = self.config
        feed, source = self._machines(plan, items)
        crew = Crew(config.collect.concurrency)
        async with open_client(config, self.credentials, self.stats, rest=crew.rest) as client:
            # The first call: a wrong secret or a refused site stops the run here (exit 3),
            # before anything in the output directory is deleted or written.
            site_id = await client.resolve_site_id()
            output = self._open_output(plan)
            encode = make_record_encoder(
                make_flattener(config.output.separator, config.output.arrays),
                run_id=output.run_id,
                site_id=site_id,
            )
            writer = Writer(output.sink, encode, self.stats)
            fatal = await self._pipeline(client, source, writer, feed, output, crew)
        finished = output.finish(
            complete=fatal is None and not self.stopper.stopping,
            abandon=isinstance(fatal, OutputError),  # the open file may hold half a machine
            stats=self.stats,
        )
        cause = fatal if fatal is not None else finished.error
        exit_code = self._exit_code(cause, finished.failures)
        where = "standard output" if plan is None else str(plan.directory)
        self._report(exit_code, finished.complete, where)
        if cause is not None:
            raise cause
        return RunResult(exit_code, self.stats, finished.complete, where, finished.manifest)

    def _open_output(self, plan: RunPlan | None) -> RunOutput:
        if plan is None:
            assert self.streams.stdout is not None
            return StreamOutput(self.streams.stdout, self.options.errors_path)
        return RunLedger.open(plan, config=self.config, started_at=self.started_at)

    async def _pipeline(
        self,
        client: CitrixClient,
        source: SourceFactory,
        writer: Writer,
        feed: MachineFeed,
        output: RunOutput,
        crew: Crew,
    ) -> BaseException | None:
        """Run the collection (the workers, or one site-wide listing) with the signal watcher
        and the progress reporter; the error that ended it, if one did."""
        site_wide = self.config.collect.mode is Mode.SITE_WIDE
        listing = ListingProgress() if site_wide else None
        reporter = ProgressReporter(
            self.stats,
            total=feed.total,
            interactive=self.options.progress and self.streams.interactive,
            stream=self.streams.stderr,
            listing=listing,
        )
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(self._watch_signals)
                if self.options.progress:
                    group.start_soon(reporter.run)
                if listing is not None:
                    await self._list_site(client, writer, feed, source, listing, output)
                else:
                    await run_pipeline(
                        source(client),
                        client,
                        writer,
                        crew=crew,
                        stopper=self.stopper,
                    )
                group.cancel_scope.cancel()
        except BaseExceptionGroup as group_error:
            return collapse(group_error)
        except CollectorError as exc:
            return exc
        return None

    async def _list_site(
        self,
        client: CitrixClient,
        writer: Writer,
        feed: MachineFeed,
        source: SourceFactory,
        listing: ListingProgress,
        output: RunOutput,
    ) -> None:
        """Site-wide mode (SPEC 5.5): one listing of the site instead of a call a machine."""
        inputs = self.config.input
        discover = inputs.all_machines and not self.options.retry_failed
        await SiteListing(
            client,
            writer,
            feed,
            open_listing_output(output),
            self.stopper,
            listing,
            machines=None if discover else source(client),
            delivery_group=inputs.delivery_group if discover else "",
            catalog=inputs.catalog if discover else "",
        ).run()

    def _report(self, exit_code: int, complete: bool, where: str) -> None:
        """The metrics file (when asked for) and the summary on standard error."""
        stats = self.stats
        duration = time.monotonic() - self.started
        if self.options.metrics_file:
            # Imported only when asked for: prometheus_client costs 10 to 40 ms of start-up.
            from collector.metrics import write_metrics

            try:
                write_metrics(
                    Path(self.options.metrics_file),
                    stats,
                    duration_s=duration,
                    exit_code=exit_code,
                    complete=complete,
                )
            except OutputError as exc:
                log.error("%s", exc)
        print_summary(
            summary_lines(
                stats, duration_s=duration, output=where, complete=complete, exit_code=exit_code
            ),
            self.streams.stderr,
        )

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
