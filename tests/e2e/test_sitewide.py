"""The real `collector run --site-wide` against the simulator: the records of a per-machine
run, in about sessions/1000 calls, exactly once across kills, stops and failed pages."""

from __future__ import annotations

import hashlib
import math
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from collector.simulator import app as simulator_app
from collector.simulator.app import Endpoint
from collector.simulator.faults import Reply
from tests.e2e.conftest import (
    assert_exactly_once,
    base_config,
    cli_env,
    committed_records,
    run_cli,
    start_cli,
    wait_for,
)

UNKNOWN = ["CONTOSO\\NO-SUCH-VDA-1", "no-such-vda-2.example.local"]
VOLATILE = ("_collected_at", "_run_id")


def machine_list(tmp_path: Path, sim: Any, unknown: list[str] = UNKNOWN) -> Path:
    path = tmp_path / "machines.txt"
    sim.site.write_machine_list(path, form="mixed")
    with open(path, "a") as handle:
        handle.write("".join(f"{name}\n" for name in unknown))
    return path


def stable(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records without the fields that differ between two runs, in session Id order."""
    kept = [{k: v for k, v in r.items() if k not in VOLATILE} for r in records]
    return sorted(kept, key=lambda r: (r["Id"], r["_machine"]))


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def manifest_of(out: Path) -> dict[str, Any]:
    return dict(orjson.loads((out / "manifest.json").read_bytes()))


def run(config: Path, sim: Any, tmp_path: Path, *flags: str) -> Any:
    return run_cli(["run", "-c", str(config), "--no-progress", *flags], cli_env(sim), tmp_path)


def listing_calls(sim: Any) -> int:
    return int(sim.counters.requests["sessions"] + sim.counters.requests["machines"])


@pytest.mark.parametrize(
    ("machines", "faults"),
    [
        pytest.param(300, "none", id="none"),
        pytest.param(3000, "flaky", id="flaky-3000"),
    ],
)
def test_site_wide_writes_the_records_of_a_per_machine_run(
    tmp_path: Path, simulator: Any, machines: int, faults: str
) -> None:
    """Same records as per-machine mode, within ceil(s/1000) + ceil(m/1000) calls plus retries,
    and no per-machine call."""
    sim = simulator(machines=machines, seed=5, faults=faults)
    listed = machine_list(tmp_path, sim)
    per_machine = base_config(tmp_path, sim, listed, tmp_path / "per-machine")
    done = run(per_machine, sim, tmp_path)
    assert done.returncode == 1, done.stderr[-3000:]
    before = sim.counters.requests["machine_sessions"]
    site_out = tmp_path / "site-wide"
    site_wide = base_config(tmp_path, sim, listed, site_out)
    calls_before = listing_calls(sim)

    done = run(site_wide, sim, tmp_path, "--site-wide")

    assert done.returncode == 1, done.stderr[-3000:]
    assert sim.counters.requests["machine_sessions"] == before
    records = assert_exactly_once(site_out, sim, range(machines))
    assert stable(records) == stable(committed_records(tmp_path / "per-machine"))
    manifest = manifest_of(site_out)
    sessions = manifest["counts"]["sessions"]
    budget = math.ceil(sessions / 1000) + math.ceil(machines / 1000)
    assert listing_calls(sim) - calls_before <= budget + manifest["counts"]["retries"]
    assert manifest["mode"] == "site-wide"
    assert manifest["listing"]["session_pages"] == math.ceil(sessions / 1000)
    assert manifest["counts"]["machines_ok"] == machines
    errors = read_lines(site_out / "errors.ndjson")
    assert sorted((e["machine"], e["kind"]) for e in errors) == sorted(
        (name, "not_found") for name in UNKNOWN
    )


def test_a_list_matches_by_id_name_and_dns_name_in_any_case(tmp_path: Path, simulator: Any) -> None:
    """Id, DOMAIN\\NAME, DOMAIN|NAME and DNS name, upper or lower case, each find their machine;
    `_machine` is the list's spelling; machines without sessions count as collected."""
    sim = simulator(machines=40, seed=3)
    site = sim.site
    forms = [
        site.machine_id(0).upper(),
        site.name(1).lower(),
        site.name(2).replace("\\", "|").upper(),
        site.dns_name(3).upper(),
        site.dns_name(4).lower(),
    ]
    idle = next(i for i in range(5, 40) if not site.sessions(i))
    forms.append(site.name(idle))
    listed = tmp_path / "machines.txt"
    listed.write_text("\n".join([*forms, "CONTOSO\\GHOST-9"]) + "\n")
    out = tmp_path / "out"

    done = run(base_config(tmp_path, sim, listed, out), sim, tmp_path, "--site-wide")

    assert done.returncode == 1, done.stderr[-3000:]
    indices = [0, 1, 2, 3, 4, idle]
    records = assert_exactly_once(out, sim, indices)
    owner = {s["Id"]: forms[n] for n, i in enumerate(indices) for s in site.sessions(i)}
    assert all(r["_machine"] == owner[r["Id"]] for r in records)
    manifest = manifest_of(out)
    assert manifest["counts"]["machines_ok"] == 6
    assert manifest["counts"]["machines_failed"] == {"not_found": 1}
    assert read_lines(out / "errors.ndjson")[0]["machine"] == "CONTOSO\\GHOST-9"


def test_all_machines_keeps_every_session_named_by_machine_name(
    tmp_path: Path, simulator: Any
) -> None:
    """With --all-machines every session is kept, `_machine` is `Machine.Name`, exit 0."""
    sim = simulator(machines=120, seed=8)
    per_machine = tmp_path / "per-machine"
    config = base_config(tmp_path, sim, tmp_path / "unused.txt", per_machine)
    assert run(config, sim, tmp_path, "--all-machines").returncode == 0
    out = tmp_path / "out"
    config = base_config(tmp_path, sim, tmp_path / "unused.txt", out)

    done = run(config, sim, tmp_path, "--all-machines", "--site-wide")

    assert done.returncode == 0, done.stderr[-3000:]
    records = assert_exactly_once(out, sim, range(120))
    assert stable(records) == stable(committed_records(per_machine))
    assert manifest_of(out)["counts"]["machines_ok"] == 120


def test_all_machines_of_a_delivery_group(tmp_path: Path, simulator: Any) -> None:
    """With a delivery group, only the sessions of that group's machines are kept."""
    sim = simulator(machines=150, seed=9)
    site = sim.site
    group = site.groups[0]
    members = [i for i in range(150) if site.catalog_of(i).group["Id"] == group["Id"]]
    out = tmp_path / "out"
    config = base_config(
        tmp_path, sim, tmp_path / "unused.txt", out, input={"delivery_group": group["Name"]}
    )

    done = run(config, sim, tmp_path, "--all-machines", "--site-wide")

    assert done.returncode == 0, done.stderr[-3000:]
    assert_exactly_once(out, sim, members)
    assert manifest_of(out)["counts"]["machines_ok"] == len(members)


def test_standard_output_carries_the_records(tmp_path: Path, simulator: Any) -> None:
    """With --out -, the kept sessions go to standard output, one record a line."""
    sim = simulator(machines=30, seed=4)
    config = base_config(tmp_path, sim, machine_list(tmp_path, sim, []), tmp_path / "unused")

    done = run(config, sim, tmp_path, "--site-wide", "--out", "-")

    assert done.returncode == 0, done.stderr[-3000:]
    ids = sorted(orjson.loads(line)["Id"] for line in done.stdout.splitlines())
    assert ids == sorted(sim.site.expected_sessions(range(30)))


# --- kill -9, SIGTERM ----------------------------------------------------------------------

KILLER = """
import os, signal, sys
from collector import journal, sinks
from collector.cli import main

where, nth = {where!r}, {nth}
calls = [0]

def dying(original):
    def wrapper(*args, **kwargs):
        calls[0] += 1
        if calls[0] == nth:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)
    return wrapper

if where == "rename":
    sinks.SessionFiles.commit = dying(sinks.SessionFiles.commit)
else:
    journal.Journal.record_listing = dying(journal.Journal.record_listing)
sys.exit(main(sys.argv[1:]))
"""


def run_killed(args: list[str], sim: Any, cwd: Path, where: str, nth: int) -> int:
    """The real CLI, SIGKILLed by itself at the `nth` call of a commit step (test-only wrapper)."""
    code = KILLER.format(where=where, nth=nth)
    child = subprocess.run(
        [sys.executable, "-c", code, *args],
        env=cli_env(sim),
        cwd=cwd,
        capture_output=True,
        timeout=120,
        check=False,
    )
    return child.returncode


@pytest.mark.parametrize(
    ("where", "nth"),
    [
        pytest.param("rename", 1, id="before-the-first-rename"),
        pytest.param("rename", 3, id="between-renames"),
        pytest.param("journal", 1, id="after-the-last-page-before-the-journal"),
    ],
)
def test_kill_9_then_resume_is_exactly_once(
    tmp_path: Path, simulator: Any, where: str, nth: int
) -> None:
    """SIGKILL at a commit step, then --resume: exact output, exit 0, no orphan left."""
    sim = simulator(machines=200, seed=6)
    out = tmp_path / "out"
    config = base_config(
        tmp_path,
        sim,
        machine_list(tmp_path, sim, []),
        out,
        output={"max_records_per_file": 100},
    )
    args = ["run", "-c", str(config), "--no-progress", "--site-wide"]

    assert run_killed(args, sim, tmp_path, where, nth) == -signal.SIGKILL
    renamed = list(out.glob("sessions-*.ndjson"))
    if where == "rename":
        assert len(renamed) == nth - 1  # renamed, never journaled
    else:
        assert len(renamed) >= 5  # every file of the listing renamed, none journaled
    assert b'"listing"' not in (out / "journal.ndjson").read_bytes()
    done = run(config, sim, tmp_path, "--site-wide", "--resume")

    assert done.returncode == 0, done.stderr[-3000:]
    assert_exactly_once(out, sim, range(200))
    assert not list(out.glob("*.part"))
    manifest = manifest_of(out)
    assert [f["name"] for f in manifest["files"]] == sorted(p.name for p in out.glob("sessions-*"))
    for entry in manifest["files"]:
        data = (out / entry["name"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        assert data.count(b"\n") == entry["records"]


def test_an_outside_kill_9_mid_listing_then_resume_is_exactly_once(
    tmp_path: Path, simulator: Any
) -> None:
    """kill -9 from outside once files were renamed, pages still to come: --resume is exact."""
    sim = simulator(machines=1200, seed=15, latency_ms=300)
    out = tmp_path / "out"
    config = base_config(
        tmp_path, sim, machine_list(tmp_path, sim, []), out, output={"max_records_per_file": 200}
    )
    args = ["run", "-c", str(config), "--no-progress", "--site-wide"]
    process = start_cli(args, cli_env(sim), tmp_path)
    assert wait_for(lambda: (out / "sessions-00001.ndjson").exists(), timeout=60)

    process.kill()
    process.communicate(timeout=30)
    assert b'"listing"' not in (out / "journal.ndjson").read_bytes()
    done = run(config, sim, tmp_path, "--site-wide", "--resume")

    assert done.returncode == 0, done.stderr[-3000:]
    assert_exactly_once(out, sim, range(1200))


def test_sigterm_exits_130_and_resume_completes(tmp_path: Path, simulator: Any) -> None:
    """SIGTERM mid-listing: exit 130, nothing of the listing kept; --resume completes it."""
    sim = simulator(machines=400, seed=7, latency_ms=150)
    out = tmp_path / "out"
    config = base_config(tmp_path, sim, machine_list(tmp_path, sim, []), out)
    process = start_cli(
        ["run", "-c", str(config), "--no-progress", "--site-wide"], cli_env(sim), tmp_path
    )
    assert wait_for(lambda: sim.counters.requests["sessions"] >= 1, timeout=60)

    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)

    assert process.returncode == 130, err.decode()[-3000:]
    assert not list(out.glob("sessions-*"))
    assert manifest_of(out)["complete"] is False
    done = run(config, sim, tmp_path, "--site-wide", "--resume")
    assert done.returncode == 0, done.stderr[-3000:]
    assert_exactly_once(out, sim, range(400))


# --- faults of the listing -----------------------------------------------------------------


@pytest.fixture
def sessions_handler(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Swap the simulator's `/cvad/manage/Sessions` handler (it runs in this process)."""
    original = simulator_app.HANDLERS["sessions"]

    def install(make: Any) -> None:
        monkeypatch.setitem(simulator_app.HANDLERS, "sessions", make(original))

    yield install


def repeating(original: Endpoint) -> Endpoint:
    def handler(state: Any, request: Any, name: str) -> Reply:
        given = request.query.get("continuationToken")
        reply = original(state, request, name)
        if given is None:
            return reply
        body = orjson.loads(reply.body)
        body["ContinuationToken"] = given
        return Reply(200, orjson.dumps(body))

    return handler


def failing(original: Endpoint) -> Endpoint:
    def handler(state: Any, request: Any, name: str) -> Reply:
        if request.query.get("continuationToken") is None:
            return original(state, request, name)
        return Reply(500, b'{"message": "Internal server error", "statusCode": 500}')

    return handler


@pytest.mark.parametrize(
    ("spoil", "kind"),
    [
        pytest.param(repeating, "invalid_response", id="repeated-token"),
        pytest.param(failing, "server_error", id="page-fails-for-good"),
    ],
)
def test_a_failed_listing_exits_1_and_resume_reads_it_again(
    tmp_path: Path, simulator: Any, sessions_handler: Any, spoil: Any, kind: str
) -> None:
    """A repeated token or a page that fails for good: exit 1, every listed machine in
    errors.ndjson with that kind, no session file; --resume reads the listing again."""
    sim = simulator(machines=500, seed=12)
    out = tmp_path / "out"
    config = base_config(
        tmp_path, sim, machine_list(tmp_path, sim, []), out, collect={"max_attempts": 2}
    )
    sessions_handler(spoil)

    done = run(config, sim, tmp_path, "--site-wide")

    assert done.returncode == 1, done.stderr[-3000:]
    errors = read_lines(out / "errors.ndjson")
    assert len(errors) == 500
    assert {e["kind"] for e in errors} == {kind}
    assert not list(out.glob("sessions-*"))
    sessions_handler(lambda original: simulator_app.all_sessions)
    done = run(config, sim, tmp_path, "--site-wide", "--resume")
    assert done.returncode == 0, done.stderr[-3000:]
    assert_exactly_once(out, sim, range(500))
    assert not (out / "errors.ndjson").read_bytes().strip()


def test_shards_split_the_list_as_per_machine_mode_does(tmp_path: Path, simulator: Any) -> None:
    """Two shards read the whole listing each and keep disjoint halves that make the whole."""
    sim = simulator(machines=200, seed=13)
    listed = machine_list(tmp_path, sim, [])
    ids: list[str] = []
    for k in range(2):
        out = tmp_path / f"shard-{k}"
        config = base_config(tmp_path, sim, listed, out)
        done = run(config, sim, tmp_path, "--site-wide", "--shard", f"{k}/2")
        assert done.returncode == 0, done.stderr[-3000:]
        ids += [r["Id"] for r in committed_records(out)]

    assert sorted(ids) == sorted(sim.site.expected_sessions(range(200)))


def test_resume_after_a_committed_listing_rechecks_only_the_missing(
    tmp_path: Path, simulator: Any
) -> None:
    """--resume of a run whose only failures are not_found reads the machine listing, not the
    sessions, and writes nothing twice."""
    sim = simulator(machines=50, seed=14)
    out = tmp_path / "out"
    config = base_config(tmp_path, sim, machine_list(tmp_path, sim), out)
    assert run(config, sim, tmp_path, "--site-wide").returncode == 1
    sessions_calls = sim.counters.requests["sessions"]

    done = run(config, sim, tmp_path, "--site-wide", "--resume")

    assert done.returncode == 1, done.stderr[-3000:]
    assert sim.counters.requests["sessions"] == sessions_calls
    assert_exactly_once(out, sim, range(50))
    errors = read_lines(out / "errors.ndjson")
    assert sorted(e["machine"] for e in errors) == sorted(UNKNOWN)
