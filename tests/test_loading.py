"""Loading a run: the README's DuckDB query reads every session of a real run, no more, no less.

The real CLI collects from the simulator on 127.0.0.1 (as tests/e2e do); DuckDB then reads the
output with the README's `read_json_auto('out/sessions-*.ndjson')`, and the counts must match
the manifest's. The same run's `--metrics-file` is read back with prometheus_client's parser.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from collector.simulator import SimulatorConfig, start_in_thread
from tests.e2e.conftest import REPO, SECRET, base_config, cli_env, run_cli

pytestmark = pytest.mark.e2e

MACHINES = 60
# The README's query, as written there, with the run directory's name substituted.
README_QUERY = "SELECT count(*) FROM read_json_auto('{out}/sessions-*.ndjson')"


def query(sql: str) -> list[tuple[Any, ...]]:
    """The rows of one query, in a fresh in-memory database."""
    with duckdb.connect() as connection:
        return connection.execute(sql).fetchall()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A whole run of MACHINES machines, in small files so the glob matters; with its metrics."""
    tmp_path = tmp_path_factory.mktemp("loading")
    with start_in_thread(SimulatorConfig(machines=MACHINES, seed=11, client_secret=SECRET)) as sim:
        machines = tmp_path / "machines.txt"
        machines.write_text("".join(f"{sim.site.machine(i)['Name']}\n" for i in range(MACHINES)))
        out = tmp_path / "out"
        config = base_config(tmp_path, sim, machines, out, output={"max_records_per_file": 25})
        metrics = tmp_path / "collector.prom"

        done = run_cli(
            ["run", "-c", str(config), "--no-progress", "--metrics-file", str(metrics)],
            cli_env(sim),
            tmp_path,
        )

    assert done.returncode == 0, done.stderr[-3000:]
    return out, metrics


def test_duckdb_reads_every_session_of_the_manifest(finished_run: tuple[Path, Path]) -> None:
    """The README's DuckDB query counts exactly the manifest's sessions, over several files."""
    out, _ = finished_run
    manifest = orjson.loads((out / "manifest.json").read_bytes())

    [(count,)] = query(README_QUERY.format(out=out))

    assert len(manifest["files"]) > 1
    assert count == manifest["counts"]["sessions"] == sum(f["records"] for f in manifest["files"])
    assert count > 0


def test_the_readme_shows_that_query() -> None:
    """The README's DuckDB example reads the glob this test reads."""
    readme = (REPO / "README.md").read_text()

    assert "read_json_auto('out/sessions-*.ndjson')" in readme
    assert README_QUERY.format(out="out").split("FROM ", 1)[1] in readme


def test_duckdb_sees_one_row_a_session_id(finished_run: tuple[Path, Path]) -> None:
    """Every row DuckDB reads is a distinct session: the Id column has no repeat."""
    out, _ = finished_run

    [(rows, ids)] = query(
        f"SELECT count(*), count(DISTINCT Id) FROM read_json_auto('{out}/sessions-*.ndjson')"
    )

    assert rows == ids


def test_the_metrics_file_of_a_real_run_parses(finished_run: tuple[Path, Path]) -> None:
    """`--metrics-file` of a real run is Prometheus text whose counts are the manifest's."""
    out, metrics = finished_run
    manifest = orjson.loads((out / "manifest.json").read_bytes())

    samples = {
        s.name: s.value
        for family in text_string_to_metric_families(metrics.read_text())
        for s in family.samples
    }

    assert samples["collector_sessions"] == manifest["counts"]["sessions"]
    assert samples["collector_machines_ok"] == MACHINES
    assert samples["collector_exit_code"] == 0
    assert samples["collector_complete"] == 1
