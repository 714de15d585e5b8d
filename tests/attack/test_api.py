"""Attacks on the request path through the real CLI: a wrong base URL, a hung server, a 400.

Each test failed on the collector before issue 11 (items 6 and 10, and the `rejected` kind).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from collector.simulator.faults import Faults
from tests.e2e.conftest import base_config, cli_env, run_cli, simulator

__all__ = ["simulator"]

pytestmark = pytest.mark.e2e


def machine_list(tmp_path: Path, sim: Any, count: int) -> Path:
    path = tmp_path / "machines.txt"
    names = [sim.site.machine(i)["Name"] for i in range(count)]
    path.write_text("\n".join(names) + "\n")
    return path


def failures(out: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in (out / "errors.ndjson").read_bytes().splitlines()]


def test_wrong_base_url_path_is_fatal(tmp_path: Path, simulator: Any) -> None:
    """A base_url with a wrong path exits 3 saying base_url looks wrong, with the URL called."""

    sim = simulator(machines=5)
    out = tmp_path / "out"
    config = base_config(
        tmp_path,
        sim,
        machine_list(tmp_path, sim, 5),
        out,
        api={"base_url": sim.base_url + "/wrong"},
    )
    done = run_cli(["run", "-c", str(config), "--no-progress"], cli_env(sim), tmp_path)
    assert done.returncode == 3, done.stderr[-2000:]
    assert "base_url" in done.stderr
    assert f"{sim.base_url}/wrong/cvad/manage/me" in done.stderr
    assert sim.counters.requests["machine_sessions"] == 0


def test_me_is_called_even_with_a_site_id(tmp_path: Path, simulator: Any) -> None:
    """With [api] site_id configured the run still starts with exactly one GET /me."""

    sim = simulator(machines=5)
    out = tmp_path / "out"
    config = base_config(
        tmp_path, sim, machine_list(tmp_path, sim, 5), out, api={"site_id": sim.site.site_id}
    )
    done = run_cli(["run", "-c", str(config), "--no-progress"], cli_env(sim), tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sim.counters.requests["me"] == 1


def test_timeout_records_the_transaction_id_sent(tmp_path: Path, simulator: Any) -> None:
    """A request that times out is recorded with the Citrix-TransactionId we sent, not null."""

    sim = simulator(machines=2, faults=Faults(p_hang=1.0, hang_s=30.0))
    out = tmp_path / "out"
    config = base_config(
        tmp_path,
        sim,
        machine_list(tmp_path, sim, 2),
        out,
        collect={"request_timeout_s": 0.5, "max_attempts": 2, "max_backoff_s": 0.1},
    )
    done = run_cli(["run", "-c", str(config), "--no-progress"], cli_env(sim), tmp_path)
    assert done.returncode == 1, done.stderr[-2000:]
    records = failures(out)
    assert [r["kind"] for r in records] == ["timeout", "timeout"]
    for record in records:
        assert record["transaction_id"], record
        assert record["transaction_id"] in done.stderr  # the same id as the log line's


def test_400_is_rejected_not_forbidden(tmp_path: Path, simulator: Any) -> None:
    """A 400 answer to a machine's sessions is recorded as kind rejected, status 400."""

    sim = simulator(machines=2, deny={"sessions": 400})
    out = tmp_path / "out"
    config = base_config(tmp_path, sim, machine_list(tmp_path, sim, 2), out)
    done = run_cli(["run", "-c", str(config), "--no-progress"], cli_env(sim), tmp_path)
    assert done.returncode == 1, done.stderr[-2000:]
    assert {(r["kind"], r["status"]) for r in failures(out)} == {("rejected", 400)}
