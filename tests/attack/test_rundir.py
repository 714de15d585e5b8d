"""Attacks on the run directory (issue 11, items 1, 3 and 12), each with the real CLI.

Two runs on one directory, a journal torn or damaged as a crash or a disk would leave it, and
a umask that would let others read personal data.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import orjson
import pytest

from collector.rundir import run_files
from collector.verify import verify_run
from tests.e2e.conftest import (
    assert_exactly_once,
    cli_env,
    journal_commits,
    run_cli,
    setup_run,
    start_cli,
    wait_for,
)

# The simulator fixture of the e2e tier, re-exported so pytest finds it here.
from tests.e2e.conftest import simulator as simulator

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize(
    "flags",
    [
        pytest.param([], id="plain"),
        pytest.param(["--resume"], id="resume"),
        pytest.param(["--overwrite"], id="overwrite"),
    ],
)
def test_a_second_run_on_a_busy_directory_exits_3_naming_the_holder(
    tmp_path: Path, simulator: Any, flags: list[str]
) -> None:
    """While run A writes into a directory, run B on it exits 3 naming A's pid; A stays whole."""
    sim = simulator(machines=300, seed=31, latency_ms=80)
    config, out = setup_run(tmp_path, sim, concurrency=4, per_file=50)
    env = cli_env(sim)
    first = start_cli(["run", "-c", str(config), "--no-progress"], env, tmp_path)
    try:
        assert wait_for(lambda: journal_commits(out) >= 1 or first.poll() is not None)

        second = run_cli(["run", "-c", str(config), "--no-progress", *flags], env, tmp_path)

        assert first.poll() is None, "run A ended before run B was tried: the test proves nothing"
        assert second.returncode == 3, second.stderr[-3000:]
        assert f"{out} is in use by another collector run (pid {first.pid})" in second.stderr
        _, err = first.communicate(timeout=120)
    finally:
        first.kill()  # no-op once it has exited
        first.communicate()
    assert first.returncode == 0, err.decode()[-3000:]
    assert_exactly_once(out, sim, range(300))
    assert verify_run(out).problems == []


def complete_run(tmp_path: Path, sim: Any) -> tuple[Path, Path, dict[str, str]]:
    config, out = setup_run(tmp_path, sim, concurrency=16, per_file=50)
    env = cli_env(sim)
    done = run_cli(["run", "-c", str(config), "--no-progress"], env, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    return config, out, env


@pytest.mark.parametrize(
    "cut",
    [
        pytest.param(lambda line: line[: len(line) // 2], id="cut-mid-line"),
        pytest.param(lambda line: line.rstrip(b"\n"), id="no-final-newline"),
    ],
)
def test_a_torn_last_commit_then_resume_is_exact(tmp_path: Path, simulator: Any, cut: Any) -> None:
    """kill -9 mid-append tears the last commit line: --resume recollects its machines, once.

    The manifest lists every session file on disk, and a further --resume collects nothing.
    """
    sim = simulator(machines=200, seed=32)
    config, out, env = complete_run(tmp_path, sim)
    journal = out / "journal.ndjson"
    lines = journal.read_bytes().splitlines(keepends=True)
    assert orjson.loads(lines[-1])["t"] == "end" and orjson.loads(lines[-2])["t"] == "commit"
    journal.write_bytes(b"".join(lines[:-2]) + cut(lines[-2]))  # no end line: killed

    resumed = run_cli(["run", "-c", str(config), "--no-progress", "--resume"], env, tmp_path)

    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_exactly_once(out, sim, range(200))
    manifest = orjson.loads((out / "manifest.json").read_bytes())
    assert manifest["complete"] is True
    assert {f["name"] for f in manifest["files"]} == {p.name for p in out.glob("sessions-*")}
    assert manifest["counts"]["sessions"] == sum(len(sim.site.sessions(i)) for i in range(200))
    asked = sim.counters.requests["machine_sessions"]

    again = run_cli(["run", "-c", str(config), "--no-progress", "--resume"], env, tmp_path)

    assert again.returncode == 0, again.stderr[-3000:]
    assert sim.counters.requests["machine_sessions"] == asked


def run_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in run_files(out)}


def test_a_damaged_middle_line_refuses_resume_with_exit_3(tmp_path: Path, simulator: Any) -> None:
    """A bad journal line with whole lines after it is corruption: exit 3 naming the line."""
    sim = simulator(machines=200, seed=33)
    config, out, env = complete_run(tmp_path, sim)
    journal = out / "journal.ndjson"
    lines = journal.read_bytes().splitlines(keepends=True)
    assert len(lines) > 3
    lines[1] = b'{"t":"commit","files":[{"name":"sessions-0000\n'
    journal.write_bytes(b"".join(lines))
    before = run_bytes(out)

    done = run_cli(["run", "-c", str(config), "--no-progress", "--resume"], env, tmp_path)

    assert done.returncode == 3, done.stderr[-3000:]
    assert f"{journal}:2: the journal is damaged (not JSON)" in done.stderr
    assert run_bytes(out) == before


def keep_umask_022() -> None:
    """In the child: the usual umask, which leaves new files readable by everyone."""
    os.umask(0o022)


def test_no_file_of_a_run_is_readable_by_others_under_umask_022(
    tmp_path: Path, simulator: Any
) -> None:
    """The directory is created 0o750 and every file of the run is at most 0o660."""
    sim = simulator(machines=60, seed=34)
    config, out = setup_run(tmp_path, sim, concurrency=4, per_file=50)
    with open(tmp_path / "machines.txt", "a") as handle:
        handle.write("CONTOSO\\NO-SUCH-VDA\n")  # a failure, so errors.ndjson has a line

    done = run_cli(
        ["run", "-c", str(config), "--no-progress"],
        cli_env(sim),
        tmp_path,
        preexec_fn=keep_umask_022,
    )

    assert done.returncode == 1, done.stderr[-3000:]
    assert stat.S_IMODE(out.stat().st_mode) == 0o750
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert {"errors.ndjson", "journal.ndjson", "manifest.json", "sessions-00001.ndjson"} <= set(
        modes
    )
    assert (out / "errors.ndjson").read_bytes()
    assert {name: oct(mode) for name, mode in modes.items() if mode & ~0o660} == {}
