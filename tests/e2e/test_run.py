"""The real `collector run` against the simulator: exactly-once output under faults."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import requests

from collector.config import ArraysMode
from collector.flatten import make_flattener
from tests.e2e.conftest import (
    SECRET,
    assert_exactly_once,
    assert_no_secret,
    base_config,
    cli_env,
    run_cli,
    write_config,
)

UNKNOWN = [
    "CONTOSO\\NO-SUCH-VDA-1",
    "no-such-vda-2.example.local",
    "00000000-dead-beef-0000-000000000000",
]


def machine_list(tmp_path: Path, sim: Any, unknown: list[str] = UNKNOWN) -> Path:
    path = tmp_path / "machines.txt"
    sim.site.write_machine_list(path, form="mixed")
    with open(path, "a") as handle:
        handle.write("".join(f"{name}\n" for name in unknown))
    return path


def test_hostile_api_every_session_exactly_once(tmp_path: Path, simulator: Any) -> None:
    """Against 429s, 5xx, resets, truncated JSON and expiring tokens, every session lands once.

    Unknown machines are listed as not_found, the run exits 1, and the secret is nowhere.
    """
    sim = simulator(machines=600, seed=11, faults="hostile", token_lifetime_s=1)
    out = tmp_path / "out"
    config = base_config(tmp_path, sim, machine_list(tmp_path, sim), out)

    done = run_cli(["run", "-c", str(config), "--no-progress"], cli_env(sim), tmp_path)

    assert done.returncode == 1, done.stderr[-3000:]
    records = assert_exactly_once(out, sim, range(600))
    errors = [orjson.loads(line) for line in (out / "errors.ndjson").read_bytes().splitlines()]
    assert sorted(e["machine"] for e in errors) == sorted(UNKNOWN)
    assert {e["kind"] for e in errors} == {"not_found"}
    manifest = orjson.loads((out / "manifest.json").read_bytes())
    assert manifest["complete"] is True
    assert manifest["counts"]["sessions"] == len(records)
    assert manifest["counts"]["machines_failed"] == {"not_found": 3}
    assert manifest["counts"]["retries"] > 0
    assert sim.counters.injected  # the faults really happened
    assert sim.counters.tokens_issued > 1  # tokens expired and were renewed
    assert_no_secret(out, done.stderr, done.stdout.decode())


def test_records_are_the_flattened_answers(tmp_path: Path, simulator: Any) -> None:
    """Each record is the API's session flattened, plus the four added fields."""
    sim = simulator(machines=40, seed=3)
    out = tmp_path / "out"
    config = base_config(tmp_path, sim, machine_list(tmp_path, sim, unknown=[]), out)

    done = run_cli(["run", "-c", str(config), "--no-progress"], cli_env(sim), tmp_path)

    assert done.returncode == 0, done.stderr[-3000:]
    records = assert_exactly_once(out, sim, range(40))
    flatten = make_flattener(".", ArraysMode.KEEP)
    by_id = {s["Id"]: s for i in range(40) for s in sim.site.sessions(i)}
    manifest = orjson.loads((out / "manifest.json").read_bytes())
    for record in records:
        added = {k: record.pop(k) for k in ("_machine", "_collected_at", "_run_id", "_site_id")}
        assert record == flatten(by_id[record["Id"]])
        assert added["_run_id"] == manifest["run_id"]
        assert added["_site_id"] == sim.site_id


def test_stdout_carries_only_records(tmp_path: Path, simulator: Any) -> None:
    """With --out -, standard output is pure NDJSON and failures go to --errors."""
    sim = simulator(machines=30, seed=5, faults="flaky")
    config = base_config(tmp_path, sim, machine_list(tmp_path, sim), tmp_path / "unused")
    errors = tmp_path / "failed.ndjson"

    done = run_cli(
        ["run", "-c", str(config), "--out", "-", "--errors", str(errors)], cli_env(sim), tmp_path
    )

    assert done.returncode == 1, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    ids = [orjson.loads(line)["Id"] for line in lines]
    assert sorted(ids) == sorted(s["Id"] for i in range(30) for s in sim.site.sessions(i))
    assert len([orjson.loads(line) for line in errors.read_bytes().splitlines()]) == 3
    assert not (tmp_path / "unused").exists()


def test_wrong_secret_stops_at_once(tmp_path: Path, simulator: Any) -> None:
    """A refused client secret exits 3 within seconds, naming the variable to check."""
    sim = simulator(machines=50, seed=1)
    config = base_config(tmp_path, sim, machine_list(tmp_path, sim), tmp_path / "out")
    started = time.monotonic()

    done = run_cli(["run", "-c", str(config)], cli_env(sim, secret="wrong-" + SECRET), tmp_path)

    assert done.returncode == 3, done.stderr[-3000:]
    assert time.monotonic() - started < 20
    assert "CITRIX_CLIENT_SECRET" in done.stderr
    assert sim.counters.tokens_issued == 0
    assert sim.counters.requests.get("token", 0) <= 3
    assert SECRET not in done.stderr


def test_unknown_config_key_exits_2_naming_it(tmp_path: Path, simulator: Any) -> None:
    """A misspelt key is a usage error that names the key and suggests the right one."""
    sim = simulator(machines=5, seed=1)
    config = write_config(
        tmp_path / "bad.toml",
        {"api": {"customer_id": "x"}, "collect": {"concurrancy": 4}},
    )

    done = run_cli(["run", "-c", str(config)], cli_env(sim), tmp_path)

    assert done.returncode == 2
    assert "concurrancy" in done.stderr and "concurrency" in done.stderr
    assert sum(sim.counters.requests.values()) == 0


def test_missing_machine_list_exits_2_naming_it(tmp_path: Path, simulator: Any) -> None:
    """A machine list that does not exist is a usage error naming the path; nothing is called."""
    sim = simulator(machines=5, seed=1)
    missing = tmp_path / "nowhere" / "machines.txt"
    config = base_config(tmp_path, sim, missing, tmp_path / "out")

    done = run_cli(["run", "-c", str(config)], cli_env(sim), tmp_path)

    assert done.returncode == 2, done.stderr[-3000:]
    assert str(missing) in done.stderr
    assert sum(sim.counters.requests.values()) == 0


def test_all_machines_discovers_the_site(tmp_path: Path, simulator: Any) -> None:
    """--all-machines pages through /cvad/manage/Machines and collects every machine once."""
    sim = simulator(machines=1500, seed=8)
    out = tmp_path / "out"
    config = base_config(tmp_path, sim, tmp_path / "unused.txt", out)

    done = run_cli(
        ["run", "-c", str(config), "--all-machines", "--no-progress"], cli_env(sim), tmp_path
    )

    assert done.returncode == 0, done.stderr[-3000:]
    records = assert_exactly_once(out, sim, range(1500))
    assert sim.counters.requests["machines"] == 2  # 1,000 a page
    assert {r["_machine"] for r in records} <= {sim.site.name(i) for i in range(1500)}


def test_onprem_tokens(tmp_path: Path, simulator: Any) -> None:
    """On-premises Basic-auth tokens work against /cvad/manage/Tokens, from the environment."""
    sim = simulator(machines=30, seed=12)
    out = tmp_path / "out"
    config = base_config(
        tmp_path,
        sim,
        machine_list(tmp_path, sim, unknown=[]),
        out,
        api={"region": "onprem", "base_url": sim.base_url, "customer_id": "CitrixOnPremises"},
        auth={"method": "onprem", "token_url": ""},
    )
    env = cli_env(sim)
    env["CITRIX_USERNAME"] = sim.onprem_username
    env["CITRIX_PASSWORD"] = sim.onprem_password

    done = run_cli(["run", "-c", str(config), "--no-progress"], env, tmp_path)

    assert done.returncode == 0, done.stderr[-3000:]
    assert_exactly_once(out, sim, range(30))
    assert sim.counters.requests["onprem_token"] >= 1
    assert sim.onprem_password not in done.stderr


def test_bearer_mode_uses_the_given_token(tmp_path: Path, simulator: Any) -> None:
    """With method = "bearer" the token comes from CITRIX_BEARER_TOKEN; no token call is made."""
    sim = simulator(machines=20, seed=13)
    token = requests.post(
        sim.token_url,
        data={
            "grant_type": "client_credentials",
            "client_id": sim.client_id,
            "client_secret": SECRET,
        },
        timeout=10,
    ).json()["access_token"]
    out = tmp_path / "out"
    config = base_config(
        tmp_path, sim, machine_list(tmp_path, sim, unknown=[]), out, auth={"method": "bearer"}
    )
    env = cli_env(sim)
    env["CITRIX_BEARER_TOKEN"] = token

    done = run_cli(["run", "-c", str(config), "--no-progress"], env, tmp_path)

    assert done.returncode == 0, done.stderr[-3000:]
    assert_exactly_once(out, sim, range(20))
    assert sim.counters.requests["token"] == 1  # the test's own
    assert_no_secret(out, done.stderr)
    assert token not in done.stderr


def test_strict_stops_on_a_bad_line_before_any_call(tmp_path: Path, simulator: Any) -> None:
    """--strict: a bad line exits 2 naming file and line, and nothing is requested."""
    sim = simulator(machines=10, seed=2)
    machines = machine_list(tmp_path, sim, unknown=[])
    with open(machines, "a") as handle:
        handle.write("CORP\\BAD\x07NAME\n")
    config = base_config(tmp_path, sim, machines, tmp_path / "out")

    done = run_cli(["run", "-c", str(config), "--strict"], cli_env(sim), tmp_path)

    assert done.returncode == 2, done.stderr[-3000:]
    assert f"{machines}:11" in done.stderr
    assert sum(sim.counters.requests.values()) == 0


def test_strict_reads_standard_input_twice(tmp_path: Path, simulator: Any) -> None:
    """--strict with --machines - checks the piped list, then collects all of it."""
    sim = simulator(machines=25, seed=4)
    machines = machine_list(tmp_path, sim, unknown=[])
    out = tmp_path / "out"
    config = base_config(tmp_path, sim, machines, out)

    with machines.open("rb") as piped:
        done = run_cli(
            ["run", "-c", str(config), "--strict", "--machines", "-", "--no-progress"],
            cli_env(sim),
            tmp_path,
            stdin=piped,
        )

    assert done.returncode == 0, done.stderr[-3000:]
    assert_exactly_once(out, sim, range(25))


def test_overwrite_with_a_missing_list_keeps_the_old_run(tmp_path: Path, simulator: Any) -> None:
    """A bad machine list exits 2 before --overwrite deletes anything."""
    sim = simulator(machines=10, seed=2)
    out = tmp_path / "out"
    config = base_config(tmp_path, sim, machine_list(tmp_path, sim, unknown=[]), out)
    assert (
        run_cli(["run", "-c", str(config), "--no-progress"], cli_env(sim), tmp_path).returncode == 0
    )
    before = sorted(p.name for p in out.iterdir())

    done = run_cli(
        ["run", "-c", str(config), "--overwrite", "--machines", str(tmp_path / "missing.txt")],
        cli_env(sim),
        tmp_path,
    )

    assert done.returncode == 2
    assert sorted(p.name for p in out.iterdir()) == before
