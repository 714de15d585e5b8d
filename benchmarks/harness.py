"""Running the benches' children: the simulator in a thread, the collector CLI as a subprocess.

Every bench starts its own simulator in a thread of this process (127.0.0.1 only) and runs
`python -m collector run -c FILE --no-progress` as a subprocess, as a scheduler would, with
the credentials in CITRIX_CLIENT_ID / CITRIX_CLIENT_SECRET. CPU seconds (user + sys) are the
child's own, from `os.wait4`; its peak RSS is the highest `VmHWM` of `/proc/PID/status` read
while it runs (every 50 ms), because `ru_maxrss` also holds this process's size at the fork.
The simulator's memory and CPU, in this process, are never counted.

Knobs the simulator of this build does not have (`shape`, `max_in_flight`, `session_page`
are newer than some builds) raise `Unavailable`, which a bench turns into a "not available"
row rather than a crash.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[1]

SECRET = "bench-Secret-value-0123456789"
IGNORED_FIELDS = ("_collected_at", "_run_id")  # differ between any two runs by design

SUMMARY = {
    "ok": re.compile(r"machines ok\s+(\d+)"),
    "failed": re.compile(r"machines failed\s+(\d+)"),
    "sessions": re.compile(r"^\s*sessions\s+(\d+)", re.MULTILINE),
    "requests": re.compile(r"requests\s+(\d+) \("),
    "retries": re.compile(r"requests\s+\d+ \((\d+) retries"),
    "throttled": re.compile(r"requests\s+\d+ \(\d+ retries, (\d+) 429s"),
    "duration_s": re.compile(r"duration\s+([\d.]+) s \("),
    "rate": re.compile(r"duration\s+[\d.]+ s \(([\d.]+) machines/s\)"),
    # The adaptive pacing where the run ended (issue 12): absent from older builds.
    "end_rate": re.compile(r"pacing at end\s+rate ([\d.]+)/s"),
    "end_window": re.compile(r"pacing at end\s+.*window (\d+)"),
}
FLOATS = ("duration_s", "rate", "end_rate")


class Unavailable(Exception):
    """This build lacks something a bench needs; the message says what."""


@dataclass(frozen=True, slots=True)
class Summary:
    """The figures of a collector's (or a baseline's) end-of-run summary; None if absent."""

    ok: int | None = None
    failed: int | None = None
    sessions: int | None = None
    requests: int | None = None
    retries: int | None = None
    throttled: int | None = None
    duration_s: float | None = None
    rate: float | None = None
    end_rate: float | None = None  # None also when the pacer ended with no rate limit
    end_window: int | None = None


def parse_summary(text: str) -> Summary:
    """Read the summary lines `collector.progress.summary_lines` prints (any may be missing)."""
    values: dict[str, Any] = {}
    for name, pattern in SUMMARY.items():
        match = pattern.search(text)
        if match:
            number = match.group(1)
            values[name] = float(number) if name in FLOATS else int(number)
    return Summary(**values)


@dataclass
class Child:
    """A finished subprocess: exit code, standard error, its own resource use, its summary."""

    returncode: int
    stderr: str
    wall_s: float
    cpu_s: float
    maxrss_mb: float
    timed_out: bool

    @property
    def summary(self) -> Summary:
        return parse_summary(self.stderr)

    def tail(self, lines: int = 4) -> str:
        return " | ".join(self.stderr.strip().splitlines()[-lines:])


def trouble(child: Child, machines: int) -> str | None:
    """Why a collector run cannot be taken at face value, or None."""
    if child.timed_out:
        return f"killed after {child.wall_s:.0f} s"
    s = child.summary
    if s.duration_s is None or s.ok is None:
        return f"no summary (exit {child.returncode}): {child.tail()}"
    if child.returncode != 0 or s.ok != machines:
        return f"exit {child.returncode}, {s.ok} ok, {s.failed} failed"
    return None


class Budget:
    """The time left for the whole benchmark; each child gets the smaller of its cap and it."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def allows(self, needed_s: float) -> bool:
        return self.left() >= needed_s

    def cap(self, seconds: float) -> float:
        return max(1.0, min(seconds, self.left()))


def run_child(
    cmd: Sequence[str],
    env: Mapping[str, str],
    timeout_s: float,
    tick: Callable[[], None] | None = None,
) -> Child:
    """Run `cmd` to its end (killed after `timeout_s`), calling `tick` about every 50 ms."""
    with tempfile.TemporaryFile() as err:
        started = time.monotonic()
        process = subprocess.Popen(
            list(cmd),
            env=dict(env),
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        timed_out = False
        peak_kib = 0
        while True:
            peak_kib = max(peak_kib, high_water_kib(process.pid))
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - started > timeout_s:
                timed_out = True
                process.kill()
                pid, status, usage = os.wait4(process.pid, 0)
                break
            if tick is not None:
                tick()
            time.sleep(0.05)
        wall = time.monotonic() - started
        process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        err.seek(0)
        text = err.read().decode("utf-8", errors="replace")
    return Child(
        returncode=process.returncode,
        stderr=text,
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        # ru_maxrss would also count this process's own size when the child was spawned (Linux
        # folds the forked image's high-water mark into it at exec); VmHWM is the child's alone.
        maxrss_mb=(peak_kib or usage.ru_maxrss) / 1024,  # KiB on Linux
        timed_out=timed_out,
    )


def high_water_kib(pid: int) -> int:
    """The peak resident set of a running process since its exec (VmHWM), in KiB; 0 if gone."""
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


# --- the simulator ------------------------------------------------------------------------------


def simulator_knobs() -> set[str]:
    from collector.simulator import SimulatorConfig

    return {f.name for f in dataclasses.fields(SimulatorConfig)}


def shape_in_use(requested: str) -> str:
    """The shape a simulator started with `requested` serves: `full` where shapes do not exist."""
    return requested if "shape" in simulator_knobs() else "full"


def start_simulator(
    machines: int,
    latency_ms: float,
    *,
    spread: float = 0.0,
    rate_limit: float = 0.0,
    shape: str = "sparse",
    faults: Any = "none",
    prerender: bool = False,
    **knobs: Any,
) -> Any:
    """A threaded simulator; `knobs` (max_in_flight, session_page...) must exist in this build.

    `latency_ms` is the mean: each answer takes it times a factor drawn evenly from
    [1 - spread, 1 + spread].

    `prerender` encodes every machine's answer before serving (30 MB at 6,000 sparse
    machines), so the simulator's share of the two cores is HTTP alone: generating a machine's
    sessions costs more CPU than serving them, and at a fixed number in flight every
    millisecond of it lengthens the round trip the collector is measured against.

    Raises `Unavailable` naming a knob this build's `SimulatorConfig` lacks. `shape` and
    `prerender` are dropped where they do not exist yet (`shape_in_use` says which shape is
    served).
    """
    from collector.simulator import SimulatorConfig, start_in_thread

    known = simulator_knobs()
    missing = sorted(set(knobs) - known)
    if missing:
        raise Unavailable(f"the simulator has no {', '.join(missing)} knob")
    if "shape" in known:
        knobs["shape"] = shape
    if "prerender" in known:
        knobs["prerender"] = prerender
    config = SimulatorConfig(
        host="127.0.0.1",
        machines=machines,
        latency_ms=latency_ms * (1 - spread),
        latency_jitter_ms=latency_ms * 2 * spread,
        rate_limit=rate_limit,
        faults=faults,
        client_secret=SECRET,
        **knobs,
    )
    return start_in_thread(config, loop_factory=fast_loop())


def fast_loop() -> Any:
    """uvloop's loop factory when it is installed: the simulator then takes less of the CPU
    the collector competes for."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def data_requests(sim: Any) -> int:
    """Calls the simulator answered so far, token calls left out."""
    counts = sim.counters.requests
    return sum(n for endpoint, n in counts.items() if endpoint not in ("token", "onprem_token"))


def answered_429s(sim: Any) -> int:
    return int(sim.counters.statuses.get(429, 0))


# --- the collector ------------------------------------------------------------------------------


def child_env(sim: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COLLECTOR_", "CITRIX_"))}
    env["CITRIX_CLIENT_ID"] = sim.client_id
    env["CITRIX_CLIENT_SECRET"] = sim.client_secret
    env["PYTHONPATH"] = str(REPO)
    return env


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value)


def write_config(
    path: Path, sim: Any, machines: Path, out: Path, concurrency: int, rate: float
) -> Path:
    sections: dict[str, dict[str, Any]] = {
        "api": {"base_url": sim.base_url, "customer_id": sim.customer_id},
        "auth": {"token_url": sim.token_url},
        "input": {"machines": str(machines)},
        "collect": {"concurrency": concurrency, "rate": rate, "request_timeout_s": 30},
        "output": {"dir": str(out)},
    }
    lines: list[str] = []
    for section, keys in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {toml_value(value)}" for key, value in keys.items()]
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def run_collector(
    work: Path,
    sim: Any,
    machines: Path,
    timeout_s: float,
    *,
    concurrency: int,
    rate: float = 0,
    args: Sequence[str] = (),
    out: Path | None = None,
    tick: Callable[[], None] | None = None,
) -> Child:
    """`collector run` on `machines`; the output is deleted unless `out` says where to keep it."""
    keep = out is not None
    out = out or work / "out"
    shutil.rmtree(out, ignore_errors=True)
    config = write_config(work / "site.toml", sim, machines, out, concurrency, rate)
    cmd = [sys.executable, "-m", "collector", "run", "-c", str(config), "--no-progress", *args]
    try:
        return run_child(cmd, child_env(sim), timeout_s, tick)
    finally:
        if not keep:
            shutil.rmtree(out, ignore_errors=True)  # KBs a machine: do not keep them


def run_minimal(
    work: Path,
    sim: Any,
    machines: Path,
    timeout_s: float,
    concurrency: int,
    out: Path | None = None,
) -> Child:
    """The minimal aiohttp + orjson loop (`benchmarks/minimal_loop.py`) on the same list.

    Its one output file is deleted unless `out` says where to keep it.
    """
    keep = out is not None
    out = out or work / "minimal.ndjson"
    cmd = [
        sys.executable,
        str(REPO / "benchmarks" / "minimal_loop.py"),
        "--base-url",
        sim.base_url,
        "--token-url",
        sim.token_url,
        "--customer-id",
        sim.customer_id,
        "--machines",
        str(machines),
        "--out",
        str(out),
        "--concurrency",
        str(concurrency),
    ]
    try:
        return run_child(cmd, child_env(sim), timeout_s)
    finally:
        if not keep:
            out.unlink(missing_ok=True)


# --- comparing outputs --------------------------------------------------------------------------


def record_key(line: bytes) -> bytes:
    """A 16-byte digest of one record, `_collected_at` and `_run_id` left out, keys sorted."""
    record = orjson.loads(line)
    for name in IGNORED_FIELDS:
        record.pop(name, None)
    return hashlib.blake2b(
        orjson.dumps(record, option=orjson.OPT_SORT_KEYS), digest_size=16
    ).digest()


def record_keys(lines: Iterable[bytes]) -> Counter[bytes]:
    """The multiset of record digests: equal for two outputs with the same records in any order."""
    return Counter(record_key(line) for line in lines if line.strip())


def output_lines(out: Path) -> Iterable[bytes]:
    for path in sorted(out.glob("sessions-*.ndjson")):
        with path.open("rb") as handle:
            yield from handle
