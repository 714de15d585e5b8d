"""The worker pool, driven through its Protocols with small fakes."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.lowlevel
import orjson
import pytest

from collector.errors import ApiError, AuthError
from collector.flatten import make_flattener, make_record_encoder
from collector.models import ErrorKind, Failure, InvalidLine, Machine, RunStats
from collector.pipeline import GC_YOUNG_THRESHOLD, Crew, Stopper, Writer, lean_gc, run_pipeline


@dataclass
class Answer:
    items: Sequence[dict[str, Any]]


@dataclass
class FakeApi:
    """Answers after a short sleep, records the peak of concurrent calls."""

    delay: float = 0.001
    fail: dict[str, ApiError] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    running: int = 0
    peak: int = 0

    async def get_machine_sessions(self, name: str) -> Answer:
        self.calls.append(name)
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await anyio.sleep(self.delay)
            if name in self.fail:
                raise self.fail[name]
            return Answer(
                [{"Id": f"{name}-s{i}", "Nested": {"A": i}} for i in range(len(name) % 3)]
            )
        finally:
            self.running -= 1


@dataclass
class MemorySink:
    records: list[dict[str, Any]] = field(default_factory=list)
    machines: list[str] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    flushed: int = 0

    def write_sessions(self, machine_key: str, data: bytes, records: int) -> None:
        self.machines.append(machine_key)
        self.records += [orjson.loads(line) for line in data.splitlines()]

    def write_failure(self, failure: Failure) -> None:
        self.failures.append(failure)

    def flush(self) -> None:
        self.flushed += 1


async def source(names: list[str]) -> AsyncIterator[Machine | InvalidLine]:
    for name in names:
        yield Machine.from_name(name)


def make_writer(sink: MemorySink, stats: RunStats) -> Writer:
    encode = make_record_encoder(make_flattener(), run_id="run", site_id="site")
    return Writer(sink, encode, stats)


async def test_every_machine_once_and_never_more_than_concurrency_in_flight() -> None:
    """300 machines through 8 workers: each called once, peak in flight between 1 and 8."""
    api, sink, stats = FakeApi(), MemorySink(), RunStats()
    names = [f"m{i}" for i in range(300)]

    with anyio.fail_after(10):
        await run_pipeline(
            source(names), api, make_writer(sink, stats), crew=Crew(8), stopper=Stopper(1)
        )

    assert sorted(api.calls) == sorted(names)
    assert 1 < api.peak <= 8
    assert sorted(sink.machines) == sorted(n.casefold() for n in names)
    assert stats.machines_ok == 300
    assert stats.sessions == len(sink.records)
    assert sink.flushed == 1


async def test_records_carry_the_added_fields() -> None:
    """Each record starts with _machine, _collected_at, _run_id, _site_id, then the session."""
    api, sink, stats = FakeApi(), MemorySink(), RunStats()

    await run_pipeline(
        source(["VDA-1"]), api, make_writer(sink, stats), crew=Crew(1), stopper=Stopper(1)
    )

    record = sink.records[0]
    assert list(record)[:4] == ["_machine", "_collected_at", "_run_id", "_site_id"]
    assert record["_machine"] == "VDA-1"
    assert record["Nested.A"] == 0
    assert record["_collected_at"].endswith("Z")


async def test_api_errors_become_failures_and_the_run_goes_on() -> None:
    """A machine whose call fails is a Failure with kind, status, attempts and transaction id."""
    error = ApiError("Machine not found", kind=ErrorKind.NOT_FOUND, status=404, transaction_id="tx")
    error.attempts = 1
    api, sink, stats = FakeApi(fail={"gone": error}), MemorySink(), RunStats()

    await run_pipeline(
        source(["a", "gone", "b"]), api, make_writer(sink, stats), crew=Crew(2), stopper=Stopper(1)
    )

    assert [(f.machine, f.kind, f.status, f.transaction_id) for f in sink.failures] == [
        ("gone", ErrorKind.NOT_FOUND, 404, "tx")
    ]
    assert stats.failed == {"not_found": 1}
    assert stats.machines_ok == 2


async def test_invalid_lines_are_recorded_as_invalid_input() -> None:
    """A bad input line reaches the error log as invalid_input naming file and line."""
    sink, stats = MemorySink(), RunStats()

    async def items() -> AsyncIterator[Machine | InvalidLine]:
        yield InvalidLine("list.csv", 7, "bad quoting", '"x')
        yield Machine.from_name("ok")

    await run_pipeline(
        items(), FakeApi(), make_writer(sink, stats), crew=Crew(2), stopper=Stopper(1)
    )

    assert sink.failures[0].kind is ErrorKind.INVALID_INPUT
    assert "list.csv:7" in sink.failures[0].message
    assert stats.machines_ok == 1


async def test_a_fatal_error_stops_the_pool() -> None:
    """An AuthError from a worker leaves the pool and cancels the rest."""
    api = FakeApi()

    async def refuse(name: str) -> Answer:
        raise AuthError("refused")

    api.get_machine_sessions = refuse  # type: ignore[method-assign]
    with pytest.raises(BaseExceptionGroup) as caught, anyio.fail_after(5):
        await run_pipeline(
            source([f"m{i}" for i in range(50)]),
            api,
            make_writer(MemorySink(), RunStats()),
            crew=Crew(4),
            stopper=Stopper(1),
        )

    assert caught.group_contains(AuthError)


async def test_stop_takes_no_new_machines_and_flushes() -> None:
    """After stop(), no machine starts; those in flight finish and the sink is flushed."""
    api, sink, stats = FakeApi(delay=0.02), MemorySink(), RunStats()
    stopper = Stopper(grace=5)

    async def endless() -> AsyncIterator[Machine | InvalidLine]:
        i = 0
        while True:
            yield Machine.from_name(f"m{i}")
            i += 1
            if i == 20:
                stopper.stop()

    with anyio.fail_after(5):
        await run_pipeline(endless(), api, make_writer(sink, stats), crew=Crew(4), stopper=stopper)

    assert len(api.calls) < 20
    assert sorted(sink.machines) == sorted(api.calls)  # whatever started was written
    assert sink.flushed == 1


@dataclass
class GcSpy:
    """An API that notes the collector's young threshold and frozen count while it answers."""

    seen: list[tuple[int, int]] = field(default_factory=list)

    async def get_machine_sessions(self, name: str) -> Answer:
        self.seen.append((gc.get_threshold()[0], gc.get_freeze_count()))
        await anyio.lowlevel.checkpoint()
        return Answer([{"Id": name}])


async def test_the_pool_runs_with_the_lean_collector_and_puts_it_back() -> None:
    """While workers answer, the young threshold is raised and the start-up heap frozen;
    afterwards both are as before."""
    api, sink, stats = GcSpy(), MemorySink(), RunStats()
    before = gc.get_threshold()

    await run_pipeline(
        source(["VDA-1", "VDA-2"]), api, make_writer(sink, stats), crew=Crew(2), stopper=Stopper(1)
    )

    assert [threshold for threshold, _ in api.seen] == [GC_YOUNG_THRESHOLD] * 2
    assert all(frozen > 0 for _, frozen in api.seen)
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_lean_gc_puts_the_collector_back_after_an_error() -> None:
    """A run that fails still leaves the threshold and the frozen set as they were."""
    before = gc.get_threshold()

    with pytest.raises(RuntimeError), lean_gc():
        raise RuntimeError("a fatal error in the pool")

    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


async def test_workers_hand_the_writer_encoded_bytes_not_parsed_sessions() -> None:
    """What reaches the sink is each machine's NDJSON as the encoder makes it, in one piece."""
    api, stats = FakeApi(), RunStats()
    written: list[tuple[str, bytes, int]] = []

    class BytesSink(MemorySink):
        def write_sessions(self, machine_key: str, data: bytes, records: int) -> None:
            written.append((machine_key, data, records))

    writer = make_writer(BytesSink(), stats)
    await run_pipeline(source(["VDA-2"]), api, writer, crew=Crew(1), stopper=Stopper(1))

    [(key, data, records)] = written
    assert key == "vda-2"
    assert records == 2 and data.count(b"\n") == 2
    assert [orjson.loads(line)["Id"] for line in data.splitlines()] == ["VDA-2-s0", "VDA-2-s1"]


# --- the crew: a worker waiting out a retry lends its place ---------------------------------


@dataclass
class RestingApi(FakeApi):
    """Machines named r… wait out one retry through `crew.rest`; notes who was running."""

    crew: Crew = field(default_factory=lambda: Crew(1))
    seen: list[tuple[str, int, int]] = field(default_factory=list)  # name, workers, resting

    async def get_machine_sessions(self, name: str) -> Answer:
        self.seen.append((name, self.crew.workers, self.crew.resting))
        if name.startswith("r"):
            await self.crew.rest(1.0)
        return await super().get_machine_sessions(name)


async def test_stand_ins_collect_while_every_worker_waits_out_a_retry() -> None:
    """Both workers rest until ten other machines are collected: only stand-ins can do it."""
    others = anyio.Event()

    async def until_others_done(seconds: float) -> None:
        await others.wait()

    crew = Crew(2, sleep=until_others_done)
    api = RestingApi(crew=crew)
    names = ["r1", "r2"] + [f"a{i}" for i in range(10)]

    class Watching(MemorySink):
        def write_sessions(self, machine_key: str, data: bytes, records: int) -> None:
            super().write_sessions(machine_key, data, records)
            if sum(1 for key in self.machines if key.startswith("a")) == 10:
                others.set()

    with anyio.fail_after(5):
        await run_pipeline(
            source(names), api, make_writer(Watching(), RunStats()), crew=crew, stopper=Stopper(1)
        )

    assert sorted(api.calls) == sorted(names)
    assert crew.workers == 0


async def test_the_crew_never_grows_past_one_stand_in_a_place() -> None:
    """When every machine rests, the crew stops hiring at twice `concurrency` tasks."""
    released = anyio.Event()

    async def until_all_rest(seconds: float) -> None:
        if crew.resting == crew.most:
            released.set()
        await released.wait()

    crew = Crew(2, sleep=until_all_rest)
    api = RestingApi(crew=crew)

    with anyio.fail_after(5):
        await run_pipeline(
            source([f"r{i}" for i in range(20)]),
            api,
            make_writer(MemorySink(), RunStats()),
            crew=crew,
            stopper=Stopper(1),
        )

    assert crew.most == 4
    assert max(workers for _, workers, _ in api.seen) == 4
    assert len(api.calls) == 20


async def test_a_stand_in_leaves_once_the_worker_it_stood_in_for_is_back() -> None:
    """After the one rest is over, the crew goes back to `concurrency` workers."""
    crew = Crew(2, sleep=lambda seconds: anyio.sleep(0.01))
    api = RestingApi(crew=crew)
    names = ["r1"] + [f"a{i}" for i in range(200)]

    with anyio.fail_after(5):
        await run_pipeline(
            source(names), api, make_writer(MemorySink(), RunStats()), crew=crew, stopper=Stopper(1)
        )

    hired = [workers for name, workers, _ in api.seen if workers > 2]
    assert hired  # a stand-in worked during the rest
    last = api.seen[-100:]  # well after the 10 ms rest (1 ms a machine, 2 at a time)
    assert all(workers <= 2 and resting == 0 for _, workers, resting in last)
    assert crew.workers == 0
