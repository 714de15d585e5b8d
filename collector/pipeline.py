"""The worker pool: source → bounded stream → the crew's workers → the writer's sink.

Only this module creates task groups and memory streams. It sees its collaborators through
Protocols (`SessionsApi`, `RecordSink`), so tests drive it with ten-line fakes. Memory is
bounded by the stream's buffer and the crew's size, never by the number of machines.

Stopping (SIGINT/SIGTERM) is a `Stopper`: intake stops at once, machines still buffered are
not started, requests in flight get `grace` seconds to finish, and the writer always drains
what was collected so the caller can commit it.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import AsyncIterable, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from collector.errors import ApiError
from collector.flatten import RecordEncoder
from collector.models import (
    Collected,
    ErrorKind,
    Failed,
    Failure,
    InvalidLine,
    Machine,
    Outcome,
    RunStats,
)

log = logging.getLogger("collector.pipeline")

# Allocations between two young-generation collections while the pool runs (CPython's default
# is 700). The requests in flight keep thousands of young objects alive, so at 700 a collection
# walked them every 20 or so machines; no request makes reference cycles, so little waits longer.
GC_YOUNG_THRESHOLD = 10_000

# Stand-ins a worker waiting out a retry may have at once, per place of `concurrency`. One is
# enough to keep every place busy; the cap bounds the machines held (one a task) when a
# server answers every call with a wait, where each stand-in would soon rest and hire another.
STAND_INS_PER_PLACE = 1


class SessionsAnswer(Protocol):
    """**Protocol:** what the API answers for one machine."""

    @property
    def items(self) -> Sequence[dict[str, Any]]: ...


class SessionsApi(Protocol):
    """**Protocol:** the one call the workers make."""

    async def get_machine_sessions(self, name: str) -> SessionsAnswer: ...


class RecordSink(Protocol):
    """**Protocol:** where the writer puts records and failures."""

    def write_sessions(self, machine_key: str, data: bytes, records: int) -> None: ...

    def write_failure(self, failure: Failure) -> None: ...

    def flush(self) -> None: ...


def utc_now() -> str:
    """Now as RFC 3339 UTC with milliseconds and a Z."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def invalid_input_failure(line: InvalidLine) -> Failure:
    return Failure(
        machine=line.text or line.where(),
        kind=ErrorKind.INVALID_INPUT,
        status=None,
        message=f"{line.where()}: {line.message}",
        attempts=0,
        transaction_id=None,
        at=utc_now(),
    )


class Crew:
    """How many workers the pool runs: `concurrency`, and a stand-in for each one resting.

    A worker waiting out a retry (a scattered 429's `retryDelay`, a 503's backoff) holds no
    place in the pacer's window, but it did hold one of the pool's: at 2,000 requests/s, 1% of
    429s with a 1 s `retryDelay` kept a third of 64 workers asleep (SPEC 8, scattered 429s).
    So the retry policy sleeps through `rest`, which hires a stand-in while the worker rests,
    and once more than `concurrency` are awake the next to finish a machine leaves. The calls
    in flight are still capped by the pacer's window, never above `concurrency` (SPEC 5.4).
    """

    def __init__(
        self, concurrency: int, sleep: Callable[[float], Awaitable[None]] = anyio.sleep
    ) -> None:
        self.concurrency = concurrency
        self.most = concurrency * (1 + STAND_INS_PER_PLACE)
        self.workers = 0  # worker tasks running
        self.resting = 0  # ... of which (or the feed, paging a discovery) waiting out a retry
        self.start: Callable[[], None] | None = None  # starts a worker task, while the pool runs
        self._sleep = sleep

    def hire(self) -> None:
        assert self.start is not None
        self.workers += 1
        self.start()

    async def rest(self, seconds: float) -> None:
        """The retry policy's sleep: `seconds` of it, with a stand-in working meanwhile."""
        self.resting += 1
        if self.start is not None and self.short_handed():
            self.hire()
        try:
            await self._sleep(seconds)
        finally:
            self.resting -= 1

    def short_handed(self) -> bool:
        """Fewer than `concurrency` awake, and room for one more task."""
        return self.workers - self.resting < self.concurrency and self.workers < self.most

    def surplus(self) -> bool:
        """More than `concurrency` awake: a worker between machines should leave."""
        return self.workers - self.resting > self.concurrency


class Stopper:
    """Stops a running pipeline gracefully: no new machines, `grace` seconds for those in flight."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.stopping = False
        self.intake = anyio.CancelScope()
        self.work = anyio.CancelScope()

    def stop(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        self.intake.cancel()
        self.work.deadline = anyio.current_time() + self.grace


@contextlib.contextmanager
def lean_gc() -> Iterator[None]:
    """Fewer and cheaper garbage collections while the pool runs; as they were afterwards.

    What is alive at the start (modules, configuration, the client) lives the whole run, so it
    is frozen out of the collector's sight (`gc.freeze`), and the young generation may grow to
    `GC_YOUNG_THRESHOLD`. Measured: BENCHMARKS.md, "What each change bought".
    """
    threshold = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *threshold[1:])
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()


T = TypeVar("T")


async def put(stream: MemoryObjectSendStream[T], item: T) -> None:
    """Send `item`, waiting only when the buffer is full.

    anyio's `send()` and `receive()` pass a checkpoint (a trip round the event loop) even when
    they need not wait: four a machine, for nothing. Cancellation still reaches a worker at
    its next request, which always awaits.
    """
    try:
        stream.send_nowait(item)
    except anyio.WouldBlock:
        await stream.send(item)


async def take(stream: MemoryObjectReceiveStream[T]) -> T:
    """The next item, waiting only when none is buffered. Raises `anyio.EndOfStream` at the end."""
    try:
        return stream.receive_nowait()
    except anyio.WouldBlock:
        return await stream.receive()


async def collect_one(api: SessionsApi, machine: Machine) -> Outcome:
    """Collect one machine; the only place an `ApiError` becomes a `Failure`.

    The client has already logged the failure with its transaction id.
    """
    try:
        answer = await api.get_machine_sessions(machine.name)
    except ApiError as exc:
        failure = Failure(
            machine=machine.name,
            kind=exc.kind,
            status=exc.status,
            message=exc.message,
            attempts=exc.attempts,
            transaction_id=exc.transaction_id,
            at=utc_now(),
        )
        return Failed(machine, failure)
    return Collected(machine, list(answer.items), utc_now())


@dataclass(slots=True)
class Encoded:
    """One machine's records as NDJSON bytes: what a worker hands the writer.

    Encoding in the worker lets the parsed answer die at once. Buffered in the stream, its
    dicts would outlive the young generation and later collections would walk them again
    (with `lean_gc`: 0.3 to 0.5 s of collections per 5,000 machines before, 0.07 after).
    """

    machine: Machine
    data: bytes
    records: int


class Writer:
    """Feeds the sink and keeps the counts, for every outcome as soon as it is known.

    `encoded` turns one machine's sessions into its records; the workers call it, then
    `handle`. Neither awaits, so the sink sees one machine at a time.
    """

    def __init__(self, sink: RecordSink, encode: RecordEncoder, stats: RunStats) -> None:
        self.sink = sink
        self.encode = encode
        self.stats = stats

    def encoded(self, collected: Collected) -> Encoded:
        """`collected` as the records the sink will get (pure: a worker may call it)."""
        sessions = collected.sessions
        data = b""
        if sessions:
            data = self.encode(collected.machine.name, collected.collected_at, sessions)
        return Encoded(collected.machine, data, len(sessions))

    def handle(self, outcome: Outcome | Encoded | InvalidLine) -> None:
        if isinstance(outcome, Collected):
            outcome = self.encoded(outcome)
        if isinstance(outcome, Encoded):
            self.sink.write_sessions(outcome.machine.key, outcome.data, outcome.records)
            self.stats.machines_ok += 1
            self.stats.sessions += outcome.records
        elif isinstance(outcome, Failed):
            self.sink.write_failure(outcome.failure)
            self.stats.count_failure(outcome.failure.kind)
        else:
            log.warning("%s: %s", outcome.where(), outcome.message)
            self.sink.write_failure(invalid_input_failure(outcome))
            self.stats.count_failure(ErrorKind.INVALID_INPUT)


async def run_pipeline(
    source: AsyncIterable[Machine | InvalidLine],
    api: SessionsApi,
    writer: Writer,
    *,
    crew: Crew,
    stopper: Stopper,
) -> None:
    """Collect every machine of `source` with the `crew`'s workers, then flush the sink.

    Raises whatever fatal error a worker raised (after cancelling the rest); `ApiError` never
    leaves the pool.
    """
    machines_send, machines = anyio.create_memory_object_stream[Machine](crew.concurrency * 2)

    async def feed() -> None:
        async with machines_send:
            with stopper.intake:
                async for item in source:
                    if isinstance(item, InvalidLine):
                        writer.handle(item)
                    else:
                        await put(machines_send, item)

    async def worker() -> None:
        try:
            while not crew.surplus():
                try:
                    machine = await take(machines)
                except anyio.EndOfStream:
                    return  # the feed is done (every worker shares the one receiving end)
                if stopper.stopping:
                    return  # buffered machines stay uncollected; resume picks them up
                outcome = await collect_one(api, machine)
                # Handed to the sink here and now (`handle` encodes it): it never awaits, so
                # two machines' records never interleave, and no stream or task hop is paid.
                writer.handle(outcome)
        finally:
            crew.workers -= 1

    async def work() -> None:
        try:
            with stopper.work:
                async with anyio.create_task_group() as workers:

                    def start() -> None:
                        workers.start_soon(worker)

                    crew.start = start
                    for _ in range(crew.concurrency):
                        crew.hire()
        finally:
            crew.start = None
            machines.close()

    with lean_gc():
        async with anyio.create_task_group() as group:
            group.start_soon(work)
            group.start_soon(feed)
        writer.sink.flush()
