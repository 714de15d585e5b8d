"""The real `collector run` against a server that pages each machine's sessions (SPEC 5.1):
every page followed, a machine committed only whole, a repeated token refused, kills resumed."""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from collector.journal import read_journal
from collector.models import key_digest, machine_key
from collector.simulator import Site
from tests.e2e.conftest import (
    REPO,
    assert_exactly_once,
    base_config,
    cli_env,
    committed_records,
    run_cli,
    write_config,
)
from tests.e2e.test_commands import Announced

PAGE = 3  # sessions a page: most machines then have one page, many have several
MACHINES = 200
SIMULATE_WAIT_S = 30  # `collector simulate` announces itself in well under a second


def pages_of(sessions: int) -> int:
    """The calls one machine takes: an empty machine still answers one (empty) page."""
    return max(1, -(-sessions // PAGE))


def session_counts(sim: Any, machines: int) -> list[int]:
    return [len(sim.site.sessions(i)) for i in range(machines)]


def manifest_of(out: Path) -> dict[str, Any]:
    return dict(orjson.loads((out / "manifest.json").read_bytes()))


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def setup_run(tmp_path: Path, sim: Any, form: str = "mixed") -> tuple[Path, Path]:
    machines = tmp_path / "machines.txt"
    sim.site.write_machine_list(machines, form=form)
    out = tmp_path / "out"
    # Small files: a run commits machines every few dozen records, so a kill finds some done.
    return base_config(tmp_path, sim, machines, out, output={"max_records_per_file": 40}), out


def test_paged_machines_are_collected_exactly_once(tmp_path: Path, simulator: Any) -> None:
    """Paged 3 sessions at a time through flaky faults: every session once, each page a request."""
    sim = simulator(machines=MACHINES, seed=5, faults="flaky", session_page=PAGE)
    config, out = setup_run(tmp_path, sim)
    counts = session_counts(sim, MACHINES)
    assert max(counts) > 2 * PAGE, "the seed must give machines of three pages or more"

    done = run_cli(["run", "-c", str(config), "--no-progress"], cli_env(sim), tmp_path)

    assert done.returncode == 0, done.stderr[-3000:]
    assert_exactly_once(out, sim, range(MACHINES))
    pages = sum(pages_of(n) for n in counts)
    assert sim.counters.requests["machine_sessions"] >= pages
    manifest = manifest_of(out)
    assert manifest["complete"] is True
    assert manifest["counts"]["machines_ok"] == MACHINES
    assert manifest["counts"]["sessions"] == sum(counts)
    assert manifest["counts"]["requests"] >= pages


# A test-only wrapper: the real CLI, which SIGKILLs itself as it asks for the `nth` later page
# (a `continuationToken` call) of any machine, after noting which machine that was.
KILLER = """
import os, signal, sys
from collector import client
from collector.cli import main

nth, note = {nth}, {note!r}
calls = [0]
original = client.CitrixClient._call

async def dying(self, path, params, **kwargs):
    if any(key == "continuationToken" for key, _ in params):
        calls[0] += 1
        if calls[0] == nth:
            with open(note, "w") as handle:
                handle.write(kwargs["subject"].removeprefix("machine "))
            os.kill(os.getpid(), signal.SIGKILL)
    return await original(self, path, params, **kwargs)

client.CitrixClient._call = dying
sys.exit(main(sys.argv[1:]))
"""


def run_killed(args: list[str], sim: Any, cwd: Path, nth: int) -> tuple[int, str]:
    """The real CLI killed at its `nth` later-page request: its exit code, the machine's name."""
    note = cwd / "killed-at.txt"
    child = subprocess.run(
        [sys.executable, "-c", KILLER.format(nth=nth, note=str(note)), *args],
        env=cli_env(sim),
        cwd=cwd,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert note.exists(), f"the run never asked for page {nth}:\n{child.stderr.decode()[-3000:]}"
    return child.returncode, note.read_text()


def settled(count: Callable[[], int], timeout: float = 5, quiet: float = 0.3) -> int:
    """A counter once it has stopped moving: a killed client's last requests still land."""
    deadline, value = time.monotonic() + timeout, count()
    while time.monotonic() < deadline:
        time.sleep(quiet)
        if count() == value:
            return value
        value = count()
    raise AssertionError(f"the simulator was still answering after {timeout} s")


def written_bytes(out: Path) -> bytes:
    """Every session file's bytes, committed or still `.part` (whose last line may be torn)."""
    return b"".join(path.read_bytes() for path in out.glob("sessions-*"))


@pytest.mark.parametrize("nth", [1, 110], ids=["first-later-page", "a-later-page-mid-run"])
def test_kill_9_between_two_pages_then_resume(tmp_path: Path, simulator: Any, nth: int) -> None:
    """SIGKILL between two pages of a machine: none of it written; --resume: exactly once, 0."""
    sim = simulator(machines=MACHINES, seed=6, session_page=PAGE)
    config, out = setup_run(tmp_path, sim)
    args = ["run", "-c", str(config), "--no-progress"]

    returncode, machine = run_killed(args, sim, tmp_path, nth)

    assert returncode == -signal.SIGKILL
    index = sim.site.lookup(machine.replace("\\", "|"))  # the wire form of DOMAIN\NAME
    assert index is not None, machine
    first_page = [s["Id"].encode() for s in sim.site.sessions(index)[:PAGE]]
    assert len(first_page) == PAGE
    written = written_bytes(out)
    assert not any(i in written for i in first_page), f"{machine} was written before its last page"
    state = read_journal(out)
    committed = state.committed if state is not None else set()
    assert key_digest(machine) not in committed
    assert committed or nth == 1, "a kill mid-run should find machines committed"
    keys = [machine_key(sim.site.list_key(i, "mixed")) for i in range(MACHINES)]
    left = [i for i in range(MACHINES) if key_digest(keys[i]) not in committed]
    calls_before = settled(lambda: sim.counters.requests["machine_sessions"])

    done = run_cli([*args, "--resume"], cli_env(sim), tmp_path)

    assert done.returncode == 0, done.stderr[-3000:]
    # Only the machines not committed are asked again, the half-read one from its first page.
    resumed = sim.counters.requests["machine_sessions"] - calls_before
    assert resumed == sum(pages_of(len(sim.site.sessions(i))) for i in left)
    assert_exactly_once(out, sim, range(MACHINES))
    assert not list(out.glob("*.part"))
    manifest = manifest_of(out)
    assert manifest["complete"] is True
    assert manifest["counts"]["machines_ok"] == MACHINES


def test_a_repeated_token_ends_as_invalid_response(tmp_path: Path, simulator: Any) -> None:
    """A pager repeating its token fails each paged machine as invalid_response; the rest land."""
    sim = simulator(machines=MACHINES, seed=7, session_page=PAGE, repeat_token=True)
    config, out = setup_run(tmp_path, sim, form="name")
    counts = session_counts(sim, MACHINES)
    paged = {sim.site.name(i) for i, n in enumerate(counts) if n > PAGE}
    whole = [i for i, n in enumerate(counts) if n <= PAGE]
    assert paged and whole

    done = run_cli(["run", "-c", str(config), "--no-progress"], cli_env(sim), tmp_path, timeout=60)

    assert done.returncode == 1, done.stderr[-3000:]
    errors = read_lines(out / "errors.ndjson")
    assert sorted(e["machine"] for e in errors) == sorted(paged)
    assert {e["kind"] for e in errors} == {"invalid_response"}
    assert_exactly_once(out, sim, whole)
    # The loop guard stops each paged machine at its second page: two calls, no more.
    assert sim.counters.requests["machine_sessions"] == len(whole) + 2 * len(paged)
    manifest = manifest_of(out)
    assert manifest["counts"]["machines_ok"] == len(whole)
    assert manifest["counts"]["machines_failed"] == {"invalid_response": len(paged)}


# --- `collector simulate` as its own process ----------------------------------------------


def read_announcement(lines: queue.Queue[str], timeout: float) -> str:
    """What `collector simulate` printed up to its credentials, waiting at most `timeout` s."""
    text, deadline = "", time.monotonic() + timeout
    while "CITRIX_CLIENT_SECRET=" not in text:
        try:
            text += lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"collector simulate announced nothing in {timeout} s") from None
    return text


def stop(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@pytest.fixture
def simulate(tmp_path: Path) -> Iterator[tuple[Announced, Path]]:
    """`collector simulate --session-page 3 --faults flaky` as its own process, stopped after."""
    machines = tmp_path / "machines.txt"
    args = ["--machines", str(MACHINES), "--seed", "11", "--faults", "flaky"]
    args += ["--session-page", str(PAGE), "--write-machines", str(machines)]
    with (tmp_path / "simulate.log").open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "collector", "simulate", *args],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=log,  # a file: a pipe nobody reads could fill and stall the server
            text=True,
            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        )
        stdout = process.stdout
        assert stdout is not None
        lines: queue.Queue[str] = queue.Queue()

        def pump() -> None:
            for line in stdout:
                lines.put(line)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            yield Announced(read_announcement(lines, SIMULATE_WAIT_S)), machines
        finally:
            stop(process)
            reader.join(timeout=10)  # the pipe ends with the process
            stdout.close()


def test_run_against_collector_simulate_session_page(tmp_path: Path, simulate: Any) -> None:
    """Against `collector simulate --session-page 3 --faults flaky`: every session exactly once."""
    announced, machines = simulate
    base = announced.base_url
    out = tmp_path / "out"
    config = write_config(
        tmp_path / "site.toml",
        {
            "api": {"base_url": base, "customer_id": announced.customer_id},
            "auth": {"token_url": f"{base}/cctrustoauth2/{announced.customer_id}/tokens/clients"},
            "input": {"machines": str(machines)},
            "collect": {"concurrency": 16, "rate": 0, "max_backoff_s": 1, "request_timeout_s": 5},
            "output": {"dir": str(out)},
        },
    )
    credentials = type("Sim", (), vars(announced))

    done = run_cli(
        ["run", "-c", str(config), "--no-progress"], cli_env(credentials), tmp_path, timeout=90
    )

    assert done.returncode == 0, done.stderr[-3000:]
    site = Site(11, MACHINES)
    want = site.expected_sessions()
    assert any(len(site.sessions(i)) > PAGE for i in range(MACHINES))
    got = [r["Id"] for r in committed_records(out)]
    assert len(got) == len(set(got)), "a session was written twice"
    assert set(got) == set(want)
    assert manifest_of(out)["counts"]["requests"] >= sum(
        pages_of(len(site.sessions(i))) for i in range(MACHINES)
    )
