"""Crash-safe runs: kill -9 then --resume, SIGTERM, --retry-failed, a full disk."""

from __future__ import annotations

import hashlib
import random
import resource
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from collector.journal import read_journal
from collector.rundir import run_files
from collector.verify import verify_run
from tests.e2e.conftest import (
    SECRET,
    assert_exactly_once,
    cli_env,
    journal_commits,
    run_cli,
    setup_run,
    start_cli,
    wait_for,
)

MACHINES = 1200


def assert_files_match_journal(out: Path) -> None:
    """Every committed file is whole: its bytes hash to what the journal recorded."""
    state = read_journal(out)
    assert state is not None
    for committed in state.files:
        if committed.name:
            data = (out / committed.name).read_bytes()
            assert hashlib.sha256(data).hexdigest() == committed.sha256
    listed = {f.name for f in state.files if f.name}
    on_disk = {p.name for p in out.glob("sessions-*.ndjson")}
    assert on_disk == listed


# The moments to kill at: a predicate on the output directory, then a random extra delay.
MOMENTS: dict[str, Callable[[Path], bool]] = {
    "before-first-commit": lambda out: (out / "journal.ndjson").exists(),
    "after-first-commit": lambda out: journal_commits(out) >= 1,
    "between-later-commits": lambda out: journal_commits(out) >= 3,
    "near-a-rename": lambda out: any(out.glob("*.part")) and journal_commits(out) >= 2,
}


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("moment", list(MOMENTS))
def test_kill_9_then_resume_is_exactly_once(
    tmp_path: Path, simulator: Any, seed: int, moment: str
) -> None:
    """SIGKILL at a chosen moment, then --resume: every session exactly once, exit 0."""
    sim = simulator(machines=MACHINES, seed=seed, latency_ms=3, latency_jitter_ms=4)
    config, out = setup_run(tmp_path, sim)
    env = cli_env(sim)
    rng = random.Random(f"{seed}-{moment}")

    process = start_cli(["run", "-c", str(config), "--no-progress"], env, tmp_path)
    try:
        assert wait_for(lambda: MOMENTS[moment](out) or process.poll() is not None, timeout=60)
        time.sleep(rng.uniform(0, 0.05))
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()  # no-op once killed; the test's own failure must not leave it running
        _, err = process.communicate(timeout=30)
    # The run must not have finished on its own, or the test proves nothing.
    assert process.returncode == -signal.SIGKILL, err.decode()[-3000:]

    done = run_cli(["run", "-c", str(config), "--no-progress", "--resume"], env, tmp_path)

    assert done.returncode == 0, done.stderr[-3000:]
    assert_exactly_once(out, sim, range(MACHINES))
    assert_files_match_journal(out)
    assert not list(out.glob("*.part"))
    manifest = orjson.loads((out / "manifest.json").read_bytes())
    assert manifest["complete"] is True
    assert {f["name"] for f in manifest["files"]} == {p.name for p in out.glob("sessions-*")}


def test_sigterm_exits_130_and_resume_completes(tmp_path: Path, simulator: Any) -> None:
    """SIGTERM: exit 130 with complete=false; --resume then finishes with exact output."""
    sim = simulator(machines=MACHINES, seed=7, latency_ms=10)
    config, out = setup_run(tmp_path, sim)
    env = cli_env(sim)

    process = start_cli(["run", "-c", str(config), "--no-progress"], env, tmp_path)
    assert wait_for(lambda: journal_commits(out) >= 1 or process.poll() is not None, timeout=60)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)

    assert process.returncode == 130, err.decode()[-3000:]
    manifest = orjson.loads((out / "manifest.json").read_bytes())
    assert manifest["complete"] is False
    assert manifest["counts"]["machines_ok"] < MACHINES
    assert_files_match_journal(out)

    done = run_cli(["run", "-c", str(config), "--no-progress", "--resume"], env, tmp_path)

    assert done.returncode == 0, done.stderr[-3000:]
    assert_exactly_once(out, sim, range(MACHINES))
    manifest = orjson.loads((out / "manifest.json").read_bytes())
    assert manifest["complete"] is True
    assert manifest["counts"]["machines_ok"] == MACHINES


def test_a_second_run_in_the_same_directory_is_refused(tmp_path: Path, simulator: Any) -> None:
    """Without --resume, a directory holding a run is refused with exit 2 and nothing called."""
    sim = simulator(machines=20, seed=1)
    config, _ = setup_run(tmp_path, sim)
    env = cli_env(sim)
    assert run_cli(["run", "-c", str(config), "--no-progress"], env, tmp_path).returncode == 0
    before = sum(sim.counters.requests.values())

    done = run_cli(["run", "-c", str(config), "--no-progress"], env, tmp_path)

    assert done.returncode == 2
    assert "--resume" in done.stderr
    assert sum(sim.counters.requests.values()) == before


def test_retry_failed_collects_only_the_failed_machines(tmp_path: Path, simulator: Any) -> None:
    """Machines failing for good are retried once the faults lift; errors.ndjson empties."""
    sim = simulator(machines=200, seed=9)
    broken = {5, 17, 42, 99}
    sim.faults.fail_machines = {sim.site.machine(i)["Id"].casefold() for i in broken}
    sim.faults.fail_machines |= {sim.site.machine(i)["Name"].casefold() for i in broken}
    sim.faults.fail_machines |= {sim.site.machine(i)["DnsName"].casefold() for i in broken}
    config, out = setup_run(tmp_path, sim, max_attempts=2)
    env = cli_env(sim)

    first = run_cli(["run", "-c", str(config), "--no-progress"], env, tmp_path)

    assert first.returncode == 1, first.stderr[-3000:]
    errors = [orjson.loads(x) for x in (out / "errors.ndjson").read_bytes().splitlines()]
    assert len(errors) == len(broken)
    assert {e["kind"] for e in errors} == {"server_error"}

    sim.faults.fail_machines = set()
    served_before = dict(sim.counters.sessions_served)
    second = run_cli(["run", "-c", str(config), "--no-progress", "--retry-failed"], env, tmp_path)

    assert second.returncode == 0, second.stderr[-3000:]
    assert (out / "errors.ndjson").read_bytes() == b""
    assert_exactly_once(out, sim, range(200))
    newly_served = {
        i for i, n in sim.counters.sessions_served.items() if n > served_before.get(i, 0)
    }
    assert newly_served == broken
    manifest = orjson.loads((out / "manifest.json").read_bytes())
    assert manifest["counts"]["machines_ok"] == 200
    assert manifest["counts"]["machines_failed"] == {}


def limit_file_size() -> None:
    """In the child: no file may grow past 128 KiB (a full disk, as far as the writer can tell).

    With one machine a file, the first machine with about 18 sessions or more hits it.
    """
    resource.setrlimit(resource.RLIMIT_FSIZE, (128 * 1024, 128 * 1024))


def test_a_full_disk_exits_3_and_keeps_committed_files(tmp_path: Path, simulator: Any) -> None:
    """When a write fails for lack of space: exit 3, the path named, committed files whole."""
    sim = simulator(machines=400, seed=4, shape="full")  # records big enough to hit the limit
    config, out = setup_run(tmp_path, sim, per_file=1)

    done = run_cli(
        ["run", "-c", str(config), "--no-progress"],
        cli_env(sim),
        tmp_path,
        preexec_fn=limit_file_size,
    )

    assert done.returncode == 3, done.stderr[-3000:]
    assert "disk is full" in done.stderr
    assert str(out) in done.stderr
    assert journal_commits(out) >= 1
    assert_files_match_journal(out)


def test_a_second_signal_exits_at_once_and_stays_resumable(tmp_path: Path, simulator: Any) -> None:
    """SIGTERM twice: exit 130 without waiting for slow requests; --resume still completes."""
    sim = simulator(machines=400, seed=21, latency_ms=50)
    config, out = setup_run(tmp_path, sim, request_timeout_s=30)
    env = cli_env(sim)

    process = start_cli(["run", "-c", str(config), "--no-progress"], env, tmp_path)
    assert wait_for(lambda: journal_commits(out) >= 1 or process.poll() is not None, timeout=60)
    sim.faults.latency_ms = 20_000  # requests in flight now hang far past any test's patience
    time.sleep(0.3)
    process.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)

    assert process.returncode == 130, err.decode()[-3000:]
    assert time.monotonic() - started < 10
    assert_files_match_journal(out)

    sim.faults.latency_ms = 0
    done = run_cli(["run", "-c", str(config), "--no-progress", "--resume"], env, tmp_path)

    assert done.returncode == 0, done.stderr[-3000:]
    assert_exactly_once(out, sim, range(400))


def test_overwrite_with_a_wrong_secret_keeps_the_old_run(tmp_path: Path, simulator: Any) -> None:
    """--overwrite deletes the old run only once the credentials work: a typo costs nothing."""
    sim = simulator(machines=60, seed=12)
    config, out = setup_run(tmp_path, sim)
    env = cli_env(sim)
    assert run_cli(["run", "-c", str(config), "--no-progress"], env, tmp_path).returncode == 0
    before = {p.name: p.read_bytes() for p in run_files(out)}

    done = run_cli(
        ["run", "-c", str(config), "--no-progress", "--overwrite"],
        cli_env(sim, secret="typo-" + SECRET),
        tmp_path,
    )

    assert done.returncode == 3, done.stderr[-3000:]
    assert "CITRIX_CLIENT_SECRET" in done.stderr
    assert {p.name: p.read_bytes() for p in run_files(out)} == before
    assert verify_run(out).problems == []
