"""The bench's pure parts: verdicts, the summary parser, record comparison and the table."""

from __future__ import annotations

import os

import orjson
import pytest

from benchmarks.harness import (
    Child,
    Summary,
    Unavailable,
    high_water_kib,
    parse_summary,
    record_key,
    record_keys,
    start_simulator,
)
from benchmarks.noise import scattered_row
from benchmarks.rates import steady_rate
from benchmarks.report import (
    FAIL,
    INFO,
    NOT_AVAILABLE,
    PASS,
    Report,
    Target,
    document,
    machine_info,
    machine_line,
    render_markdown,
    render_text,
)
from collector.models import RunStats
from collector.progress import summary_lines


@pytest.mark.parametrize(
    ("target", "value", "met"),
    [
        pytest.param(Target(">=", 576), 576.0, True, id="at-least-on-the-bound"),
        pytest.param(Target(">=", 576), 575.9, False, id="at-least-below"),
        pytest.param(Target("<=", 1.3), 1.3, True, id="at-most-on-the-bound"),
        pytest.param(Target("<=", 1.3), 1.31, False, id="at-most-above"),
        pytest.param(Target("<", 2), 2.0, False, id="below-on-the-bound"),
        pytest.param(Target("<", 2), 1.99, True, id="below"),
    ],
)
def test_target_verdict(target: Target, value: float, met: bool) -> None:
    """A target is met exactly when its comparison holds, bounds included for >= and <=."""
    assert target.met(value) is met


def test_target_text_names_bound_unit_and_derivation() -> None:
    """A target reads as operator, bound with thousands separators, unit and why."""
    assert Target(">=", 576, "machines/s", "90% of 64/0.1 s").text() == (
        ">= 576 machines/s (90% of 64/0.1 s)"
    )
    assert Target("<", 30, "MB").text() == "< 30 MB"
    assert Target(">=", 2550.0, "ok requests/s").text() == ">= 2,550 ok requests/s"


def test_check_records_verdict_value_and_figures() -> None:
    """`Report.check` stores PASS or FAIL with the value, the bound and the figures."""
    report = Report()
    passed = report.check("a", "s", "m", Target(">=", 10), 12, rate=12.0)
    failed = report.check("b", "s", "m", Target(">=", 10), 9)

    assert (passed.result, passed.value, passed.bound, passed.figures) == (
        PASS, 12, 10, {"rate": 12.0},
    )  # fmt: skip
    assert failed.result == FAIL


def test_parse_summary_reads_the_collectors_own_summary() -> None:
    """The parser reads every figure of the summary `collector run` prints today."""
    stats = RunStats(machines_ok=1998, failed={"not_found": 2}, sessions=5870, requests=2010,
                     retries=9, throttled=7, token_requests=1)  # fmt: skip
    text = "\n".join(
        summary_lines(stats, duration_s=3.2, output="out/", complete=True, exit_code=1)
    )

    summary = parse_summary(text)

    assert (summary.ok, summary.failed, summary.sessions) == (1998, 2, 5870)
    assert (summary.requests, summary.retries, summary.throttled) == (2010, 9, 7)
    assert (summary.duration_s, summary.rate) == (3.2, 625.0)


@pytest.mark.parametrize(
    ("line", "rate", "window"),
    [
        pytest.param("  pacing at end    rate 193/s, window 6", 193.0, 6, id="rate-and-window"),
        pytest.param("  pacing at end    no rate limit, window 64", None, 64, id="window-only"),
    ],
)
def test_parse_summary_reads_where_pacing_ended(line: str, rate: float | None, window: int) -> None:
    """The pacing line gives the rate (None when unlimited) and the window the run ended with."""
    summary = parse_summary(line)

    assert (summary.end_rate, summary.end_window) == (rate, window)


def test_parse_summary_leaves_missing_figures_none() -> None:
    """A baseline's two-line summary gives its machines and rate, the rest None."""
    text = "  machines ok      150\n  duration         4.0 s (37.5 machines/s)\n"

    assert parse_summary(text) == Summary(ok=150, duration_s=4.0, rate=37.5)


def test_record_key_ignores_collected_at_run_id_and_key_order() -> None:
    """Two records that differ only in `_collected_at`, `_run_id` and key order are the same."""
    one = {"_machine": "A\\B", "_collected_at": "t1", "_run_id": "r1", "Id": "s1", "x": 1}
    two = {"x": 1, "Id": "s1", "_run_id": "r2", "_collected_at": "t2", "_machine": "A\\B"}

    assert record_key(orjson.dumps(one)) == record_key(orjson.dumps(two))
    assert record_key(orjson.dumps(one)) != record_key(orjson.dumps(one | {"x": 2}))


def test_record_keys_count_duplicates() -> None:
    """The comparison is of multisets: a record written twice is not the same output."""
    line = orjson.dumps({"Id": "s1"}) + b"\n"

    assert record_keys([line, b"\n"]) != record_keys([line, line])


def test_steady_rate_leaves_out_the_burst_and_the_tail() -> None:
    """The steady rate is taken from 2 s after the start to 95 % done."""
    samples = [(0.0, 0), (1.0, 400)]  # a first-second burst
    samples += [(2.0 + t, 400 + 100 * t) for t in range(8)]  # then 100/s
    samples += [(10.0, 1150), (10.5, 1200)]  # past 95 % of 1,200

    assert steady_rate(samples, 1200) == pytest.approx(100.0)


def test_steady_rate_needs_three_seconds() -> None:
    """A run too short to have a steady part has no steady rate."""
    assert steady_rate([(0.0, 0), (2.0, 10), (4.0, 20)], 100) is None


def test_markdown_table_escapes_pipes_and_counts_rows() -> None:
    """The markdown table has one line a row, pipes in cells escaped, and the counts after it."""
    report = Report(notes=["a note"])
    report.check("rate-bound", "4,000 machines", "190/s", Target(">=", 180), 190)
    report.not_available("in-flight", "-", "-", "collector says: a | b")

    text = render_markdown(report)
    lines = text.splitlines()

    assert lines[0].startswith("| bench |") and lines[1] == "|---|---|---|---|---|"
    assert "| rate-bound | 4,000 machines | 190/s | >= 180 | PASS |" in lines
    assert "a \\| b" in text
    assert "- a note" in lines
    assert lines[-3:] == ["not run: 0", "not available: 1", "targets missed: 0"]


def test_text_table_aligns_columns() -> None:
    """Every line of the text table puts its separators in the same columns."""
    report = Report()
    report.check("latency-bound", "20,000 machines", "600 machines/s", Target(">=", 576), 600)
    report.fail("site-wide", "20,000 machines", "exit 1", Target(">=", 50))

    lines = render_text(report).splitlines()[1:4]

    assert len({line.index("|") for line in lines if "|" in line}) == 1
    assert render_text(report).endswith("targets missed: 1")


def test_document_holds_machine_rows_and_counts() -> None:
    """`latest.json` holds the machine, every row with target and verdict, and the counts."""
    report = Report()
    report.check("CPU cost", "s", "1.2x", Target("<=", 1.3), 1.2, ratio=1.2)
    report.not_available("site-wide", "s", Target(">=", 50), "refused")
    machine = {"cores": 2, "cpu_model": "x", "python": "3.11.9", "date": "2026-12-02T00:00:00Z"}

    doc = document(report, machine, "full", 12.34)

    assert doc["machine"] == machine and doc["mode"] == "full" and doc["duration_s"] == 12.3
    assert doc["rows"][0] | {"figures": None} == {
        "bench": "CPU cost", "scale": "s", "measured": "1.2x", "target": "<= 1.3",
        "result": PASS, "value": 1.2, "bound": 1.3, "figures": None,
    }  # fmt: skip
    assert doc["rows"][1]["result"] == NOT_AVAILABLE
    assert (doc["targets_missed"], doc["not_available"], doc["not_run"]) == (0, 1, 0)


def test_machine_info_names_cores_cpu_python_and_date() -> None:
    """The machine a run was taken on is described by cores, CPU model, Python and date."""
    info = machine_info()

    assert info["cores"] >= 1 and info["cpu_model"] and info["python"].startswith("3.")
    assert machine_line(info).startswith(f"machine: {info['cores']} cores, ")
    assert info["date"].endswith("Z")


def test_a_knob_the_simulator_lacks_is_unavailable() -> None:
    """A bench asking for a knob this simulator has not got gets `Unavailable`, naming it."""
    with pytest.raises(Unavailable, match="no warp_drive knob"):
        start_simulator(10, 0.0, warp_drive=3)


def test_high_water_is_read_from_proc_and_zero_for_a_gone_process() -> None:
    """A running process's peak RSS comes from /proc; a process that is gone reads as 0."""
    assert high_water_kib(os.getpid()) > 1024
    assert high_water_kib(2**22 + 1) == 0  # above Linux's pid_max


def collector_child(machines: int, duration_s: float) -> Child:
    stats = RunStats(machines_ok=machines, sessions=3 * machines, requests=machines)
    text = "\n".join(
        summary_lines(stats, duration_s=duration_s, output="out/", complete=True, exit_code=0)
    )
    return Child(0, text, duration_s, 1.0, 40.0, timed_out=False)


def test_noise_rows_compare_with_the_clean_run() -> None:
    """Scattered 429s are checked against their target as a share of the clean run's rate;
    dense ones, with no SPEC target, are an info row with the same figure."""
    report = Report()
    clean, noisy = collector_child(1000, 1.0), collector_child(1000, 2.0)

    scattered_row(report, clean, noisy, 0, 0.01, Target(">=", 70, "%"))
    scattered_row(report, clean, noisy, 0, 0.05, None)

    first, second = report.rows
    assert (first.bench, first.result, first.value) == ("scattered 429s (1%)", FAIL, 50.0)
    assert (second.bench, second.result) == ("dense 429s (5%)", INFO)
    assert "500 vs 1000 machines/s: 50 %" in second.measured
