"""`collector simulate` and `collector demo`, run as a user runs them."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

import orjson

from collector.simulator import SimulatorConfig, Site, start_in_thread
from tests.e2e.conftest import (
    REPO,
    SECRET,
    assert_no_secret,
    cli_env,
    committed_records,
    run_cli,
    write_config,
)


def cli_env_without_sim() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COLLECTOR_", "CITRIX_"))}
    env["PYTHONPATH"] = str(REPO)
    return env


class Announced:
    """What `collector simulate` printed before serving."""

    def __init__(self, text: str) -> None:
        def find(pattern: str) -> str:
            match = re.search(pattern, text)
            assert match, f"{pattern!r} not in:\n{text}"
            return match.group(1)

        self.base_url = find(r"(http://127\.0\.0\.1:\d+)")
        self.customer_id = find(r"customer id\s*:?\s*(\S+)")
        self.client_id = find(r"CITRIX_CLIENT_ID=(\S+)")
        self.client_secret = find(r"CITRIX_CLIENT_SECRET=(\S+)")


ANNOUNCE_TIMEOUT_S = 60.0  # a 5,000-machine simulator announces itself within a few seconds


def start_simulate(
    args: list[str], cwd: Path, log: IO[str]
) -> tuple[subprocess.Popen[str], Announced]:
    # Its standard error goes to a file: a pipe nobody reads could fill and stall the server.
    process = subprocess.Popen(
        [sys.executable, "-m", "collector", "simulate", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert process.stdout is not None
    lines = []
    # A simulator that never announces itself is killed, which ends its output: the read below
    # is bounded in time either way.
    watchdog = threading.Timer(ANNOUNCE_TIMEOUT_S, process.kill)
    watchdog.start()
    try:
        for line in process.stdout:
            lines.append(line)
            if "CITRIX_CLIENT_SECRET=" in line:
                break
    finally:
        watchdog.cancel()
    assert lines and "CITRIX_CLIENT_SECRET=" in lines[-1], f"no announcement: {lines}"
    return process, Announced("".join(lines))


def test_run_against_collector_simulate_hostile(tmp_path: Path) -> None:
    """The real CLI against `collector simulate --faults hostile` (5,000 machines): exactly once."""
    machines = tmp_path / "machines.txt"
    log = (tmp_path / "simulate.log").open("w")
    process, announced = start_simulate(
        [
            "--machines",
            "5000",
            "--seed",
            "42",
            "--faults",
            "hostile",
            "--write-machines",
            str(machines),
        ],
        tmp_path,
        log,
    )
    try:
        config = write_config(
            tmp_path / "site.toml",
            {
                "api": {"base_url": announced.base_url, "customer_id": announced.customer_id},
                "auth": {
                    "token_url": f"{announced.base_url}/cctrustoauth2/{announced.customer_id}"
                    "/tokens/clients"
                },
                "input": {"machines": str(machines)},
                "collect": {
                    "concurrency": 32,
                    "rate": 0,
                    "max_backoff_s": 1,
                    "request_timeout_s": 10,
                },
                "output": {"dir": str(tmp_path / "out")},
            },
        )
        env = cli_env(
            type(
                "Sim",
                (),
                {"client_id": announced.client_id, "client_secret": announced.client_secret},
            )
        )

        done = run_cli(
            ["run", "-c", str(config), "--no-progress", "--log-level", "WARNING"],
            env,
            tmp_path,
            timeout=400,
        )
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
        log.close()

    assert done.returncode == 0, done.stderr[-3000:]
    site = Site(42, 5000)
    want = site.expected_sessions()
    got = [r["Id"] for r in committed_records(tmp_path / "out")]
    assert len(got) == len(set(got)), "a session was written twice"
    assert set(got) == set(want)
    assert process.returncode is not None


def test_demo_collects_from_the_embedded_simulator(tmp_path: Path) -> None:
    """`collector demo` needs nothing but itself: it writes sessions, a manifest, and exits 0."""
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}

    done = run_cli(["demo", "--out", str(tmp_path / "demo"), "--machines", "120"], env, tmp_path)

    assert done.returncode == 0, done.stderr[-3000:]
    records = committed_records(tmp_path / "demo")
    manifest = orjson.loads((tmp_path / "demo" / "manifest.json").read_bytes())
    assert manifest["counts"]["machines_ok"] == 120
    assert manifest["counts"]["sessions"] == len(records) > 0
    assert "manifest.json" in done.stderr  # it tells the user what to open
    assert done.stdout == b""

    again = run_cli(["demo", "--out", str(tmp_path / "demo"), "--machines", "120"], env, tmp_path)

    assert again.returncode == 0, again.stderr[-3000:]  # a second demo replaces the first
    assert len(committed_records(tmp_path / "demo")) == len(records)


def test_check_and_machines_against_the_simulator(tmp_path: Path) -> None:
    """`collector check` says what works; `collector machines` lists every machine once, in a
    file others cannot read (as the run's own files)."""

    with start_in_thread(SimulatorConfig(machines=1200, seed=6)) as sim:
        config = write_config(
            tmp_path / "site.toml",
            {
                "api": {"base_url": sim.base_url, "customer_id": sim.customer_id},
                "auth": {"token_url": sim.token_url},
                "input": {"machines": "unused.txt"},
            },
        )
        env = cli_env(sim)

        checked = run_cli(["check", "-c", str(config)], env, tmp_path)
        listed = run_cli(["machines", "-c", str(config), "--out", "m.ndjson"], env, tmp_path)
        wrong = run_cli(["check", "-c", str(config)], cli_env(sim, secret="nope"), tmp_path)

    assert checked.returncode == 0, checked.stderr
    assert sim.site_id in checked.stdout.decode()
    assert listed.returncode == 0, listed.stderr
    assert (tmp_path / "m.ndjson").stat().st_mode & 0o007 == 0
    rows = [orjson.loads(line) for line in (tmp_path / "m.ndjson").read_bytes().splitlines()]
    assert sorted(r["Id"] for r in rows) == sorted(sim.site.machine(i)["Id"] for i in range(1200))
    assert set(rows[0]) == {
        "Id",
        "Name",
        "DnsName",
        "DeliveryGroup",
        "MachineCatalog",
        "SessionCount",
        "RegistrationState",
    }
    assert wrong.returncode == 3
    assert "credentials    problem:" in wrong.stdout.decode()
    assert "CITRIX_CLIENT_SECRET" in wrong.stdout.decode()


def test_check_reads_a_secret_file_and_names_it(tmp_path: Path) -> None:
    """`collector check` with the secret only in a file passes, shows the file, never the value."""
    secret = tmp_path / "client_secret"
    with start_in_thread(SimulatorConfig(machines=20, seed=6, client_secret=SECRET)) as sim:
        secret.write_text(sim.client_secret + "\n")
        secret.chmod(0o600)
        config = write_config(
            tmp_path / "site.toml",
            {
                "api": {"base_url": sim.base_url, "customer_id": sim.customer_id},
                "auth": {"token_url": sim.token_url, "client_secret_file": str(secret)},
            },
        )
        env = cli_env(sim)
        del env["CITRIX_CLIENT_SECRET"]

        checked = run_cli(["check", "-c", str(config)], env, tmp_path)

    out = checked.stdout.decode()
    assert checked.returncode == 0, out + checked.stderr
    assert f"client_secret = ****  (file {secret})" in out
    assert f"[auth] client_secret_file = {json.dumps(str(secret))}  ({config}:7)" in out
    assert "every step passed" in out
    assert SECRET not in out + checked.stderr


def test_check_with_a_bad_configuration_exits_2(tmp_path: Path) -> None:
    """`collector check` on a configuration it cannot use says why and skips the calls."""
    config = write_config(
        tmp_path / "site.toml",
        {"api": {"base_url": "http://admin:Hunter2pw@127.0.0.1:9", "customer_id": "c"}},
    )

    checked = run_cli(["check", "-c", str(config)], cli_env_without_sim(), tmp_path)

    out = checked.stdout.decode()
    assert checked.returncode == 2
    assert "configuration  problem:" in out
    assert "must not hold a user name or password" in out
    assert "Hunter2pw" not in out + checked.stderr
    assert "site           skipped" in out


def test_run_with_the_secret_only_in_a_file(tmp_path: Path) -> None:
    """`collector run` reads the secret from its file; the value reaches no file and no log."""
    secret = tmp_path / "client_secret"
    machines = tmp_path / "machines.txt"
    out = tmp_path / "out"
    with start_in_thread(SimulatorConfig(machines=20, seed=6, client_secret=SECRET)) as sim:
        secret.write_text(sim.client_secret + "\n")
        secret.chmod(0o600)
        machines.write_text("".join(f"{sim.site.machine(i)['Name']}\n" for i in range(20)))
        config = write_config(
            tmp_path / "site.toml",
            {
                "api": {"base_url": sim.base_url, "customer_id": sim.customer_id},
                "auth": {"token_url": sim.token_url, "client_secret_file": str(secret)},
                "input": {"machines": str(machines)},
                "output": {"dir": str(out)},
            },
        )
        env = cli_env(sim)
        del env["CITRIX_CLIENT_SECRET"]

        done = run_cli(
            ["run", "-c", str(config), "--no-progress", "--log-level", "DEBUG"], env, tmp_path
        )

    assert done.returncode == 0, done.stderr[-3000:]
    assert len(committed_records(out)) == sum(len(sim.site.sessions(i)) for i in range(20))
    secret.unlink()  # the only place the value may be
    assert_no_secret(tmp_path, done.stderr, done.stdout.decode())


def test_a_refused_secret_file_is_named_by_run(tmp_path: Path) -> None:
    """`collector run` with a wrong secret in a file exits 3 naming that file, not a variable."""
    secret = tmp_path / "client_secret"
    machines = tmp_path / "machines.txt"
    with start_in_thread(SimulatorConfig(machines=5, seed=6, client_secret=SECRET)) as sim:
        secret.write_text("not-the-secret\n")
        secret.chmod(0o600)
        machines.write_text(f"{sim.site.machine(0)['Name']}\n")
        config = write_config(
            tmp_path / "site.toml",
            {
                "api": {"base_url": sim.base_url, "customer_id": sim.customer_id},
                "auth": {"token_url": sim.token_url, "client_secret_file": str(secret)},
                "input": {"machines": str(machines)},
                "output": {"dir": str(tmp_path / "out")},
            },
        )
        env = cli_env(sim)
        del env["CITRIX_CLIENT_SECRET"]

        done = run_cli(["run", "-c", str(config), "--no-progress"], env, tmp_path)

    assert done.returncode == 3
    assert f"file {secret}" in done.stderr
    assert "CITRIX_CLIENT_SECRET" not in done.stderr
