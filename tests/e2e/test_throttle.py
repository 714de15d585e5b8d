"""The real `collector run` against a server that limits the calls in flight (SPEC 5.3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from collector.simulator.faults import Faults
from tests.e2e.conftest import assert_exactly_once, base_config, cli_env, run_cli

MACHINES = 800
LIMIT = 4  # sessions calls the simulator serves at once; 429 with a retryDelay body above


def test_in_flight_limit_finds_the_window(tmp_path: Path, simulator: Any) -> None:
    """Above 4 calls in flight every session still lands once, few requests are refused, and
    the manifest says the window settled at the server's limit or below, with no rate cut."""

    sim = simulator(machines=MACHINES, seed=5, latency_ms=20, max_in_flight=LIMIT)
    machines = tmp_path / "machines.txt"
    sim.site.write_machine_list(machines, form="name")
    out = tmp_path / "out"
    config = base_config(tmp_path, sim, machines, out, collect={"concurrency": 32})

    done = run_cli(["run", "-c", str(config), "--no-progress"], cli_env(sim), tmp_path)

    assert done.returncode == 0, done.stderr[-3000:]
    assert_exactly_once(out, sim, range(MACHINES))
    counters = sim.counters
    assert counters.peak_in_flight <= LIMIT
    requests = sum(counters.sessions_served.values()) + counters.in_flight_rejected
    assert counters.in_flight_rejected < 0.15 * requests  # generous: the bench has the figure
    manifest = orjson.loads((out / "manifest.json").read_bytes())
    assert 1 <= manifest["pacing"]["window"] <= LIMIT
    assert manifest["pacing"]["rate"] == 0  # no rate limit: the 429s went to the window


def test_scattered_429s_never_take_the_run_past_concurrency(tmp_path: Path, simulator: Any) -> None:
    """With 2% of answers a random 429 (1 s `retryDelay`), stand-ins work while the refused
    requests wait, yet the server never sees more than `concurrency` sessions calls at once
    (a worker back from its wait queues for a window place), and every session lands once.
    (With the window's cap at twice `concurrency`, the server saw 7 of 6.)"""
    concurrency, machines_n = 6, 1200
    faults = Faults(p_429=0.02)
    sim = simulator(machines=machines_n, seed=9, latency_ms=20, faults=faults)
    machines = tmp_path / "machines.txt"
    sim.site.write_machine_list(machines, form="name")
    out = tmp_path / "out"
    collect = {"concurrency": concurrency, "max_backoff_s": 2}
    config = base_config(tmp_path, sim, machines, out, collect=collect)

    done = run_cli(["run", "-c", str(config), "--no-progress"], cli_env(sim), tmp_path)

    assert done.returncode == 0, done.stderr[-3000:]
    assert_exactly_once(out, sim, range(machines_n))
    assert sim.counters.throttled > 10  # the noise was there
    assert 1 < sim.counters.peak_in_flight <= concurrency
