"""`--metrics-file`: the run's series in Prometheus text format, read back with its own parser."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from collector.errors import OutputError
from collector.metrics import write_metrics
from collector.models import RunStats


def sample_values(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the file, keyed by name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(path.read_text())
        for sample in family.samples
    }


def stats() -> RunStats:
    return RunStats(
        machines_ok=7,
        failed={"not_found": 2, "timeout": 1},
        sessions=40,
        requests=12,
        retries=3,
        throttled=1,
        duplicates=4,
        current_rate=8.5,
        current_window=6,
    )


def test_every_series_is_written_with_its_value(tmp_path: Path) -> None:
    """The file parses as Prometheus text and holds the run's counts, rate and window."""
    path = tmp_path / "collector.prom"

    write_metrics(path, stats(), duration_s=2.5, exit_code=1, complete=True)

    values = sample_values(path)
    assert values[("collector_machines_ok", ())] == 7
    assert values[("collector_sessions", ())] == 40
    assert values[("collector_requests", ())] == 12
    assert values[("collector_retries", ())] == 3
    assert values[("collector_throttled", ())] == 1
    assert values[("collector_duplicates", ())] == 4
    assert values[("collector_duration_seconds", ())] == 2.5
    assert values[("collector_exit_code", ())] == 1
    assert values[("collector_complete", ())] == 1
    assert values[("collector_rate_requests_per_second", ())] == 8.5
    assert values[("collector_window_in_flight", ())] == 6
    assert values[("collector_last_run_timestamp_seconds", ())] > 0


def test_failures_are_labelled_by_kind(tmp_path: Path) -> None:
    """Failed machines are one sample a kind, labelled `kind`."""
    path = tmp_path / "collector.prom"

    write_metrics(path, stats(), duration_s=1.0, exit_code=1, complete=True)

    values = sample_values(path)
    assert values[("collector_machines_failed", (("kind", "not_found"),))] == 2
    assert values[("collector_machines_failed", (("kind", "timeout"),))] == 1


def test_two_runs_in_one_process_do_not_share_series(tmp_path: Path) -> None:
    """Each write uses a registry of its own: the second file holds only the second run."""
    first, second = tmp_path / "a.prom", tmp_path / "b.prom"

    write_metrics(first, stats(), duration_s=1.0, exit_code=1, complete=True)
    write_metrics(second, RunStats(machines_ok=1), duration_s=1.0, exit_code=0, complete=True)

    values = sample_values(second)
    assert values[("collector_machines_ok", ())] == 1
    assert not [key for key in values if key[0] == "collector_machines_failed"]


def test_an_unwritable_path_is_an_output_error(tmp_path: Path) -> None:
    """A metrics file in a missing directory raises OutputError naming the file."""
    path = tmp_path / "missing" / "collector.prom"

    with pytest.raises(OutputError, match=r"metrics file .*collector\.prom"):
        write_metrics(path, stats(), duration_s=1.0, exit_code=0, complete=True)
