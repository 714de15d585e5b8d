"""Issue 11, the input items: a careless user's machine lists and settings, through the real CLI.

Each test runs `collector run` against the simulator and checks what the server saw: a list
that cannot be collected is refused before any request and leaves no run behind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.e2e.conftest import (
    Finished,
    assert_exactly_once,
    base_config,
    cli_env,
    run_cli,
)

pytestmark = pytest.mark.e2e


def collect(tmp_path: Path, sim: Any, machines: Path, *flags: str, **sections: Any) -> Finished:
    config = base_config(tmp_path, sim, machines, tmp_path / "out", **sections)
    return run_cli(["run", "-c", str(config), "--no-progress", *flags], cli_env(sim), tmp_path)


def errors_of(out: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in (out / "errors.ndjson").read_bytes().splitlines()]


def requests_made(sim: Any) -> int:
    return sum(sim.counters.requests.values())


def test_dot_names_are_invalid_input_and_never_sent(tmp_path: Path, simulator: Any) -> None:
    """Item 4: `.`, `..` and names of only dots are invalid_input; no dot segment goes out."""
    sim = simulator(machines=2)
    machines = tmp_path / "machines.txt"
    machines.write_text(f"{sim.site.name(0)}\n.\n..\n...\n{sim.site.name(1)}\n")

    done = collect(tmp_path, sim, machines)

    assert done.returncode == 1, done.stderr[-3000:]
    errors = errors_of(tmp_path / "out")
    assert sorted(e["machine"] for e in errors) == [".", "..", "..."]
    assert {e["kind"] for e in errors} == {"invalid_input"}
    assert sim.counters.requests["machine_sessions"] == 2  # only the two real machines
    assert sim.counters.requests["sessions"] == 0  # `Machines/../Sessions` never went out
    assert_exactly_once(tmp_path / "out", sim, range(2))


def test_a_csv_without_the_column_stops_before_any_request(tmp_path: Path, simulator: Any) -> None:
    """Item 7: without --strict, a CSV header lacking the column is exit 2, no call, no run."""
    sim = simulator(machines=2)
    machines = tmp_path / "machines.csv"
    machines.write_text(f"Host,Site\n{sim.site.name(0)},paris\n")

    done = collect(tmp_path, sim, machines)

    assert done.returncode == 2, done.stderr[-3000:]
    assert "no Name, MachineName, DnsName or Id column" in done.stderr
    assert requests_made(sim) == 0
    assert not (tmp_path / "out").exists()


def test_a_quoted_line_break_in_a_csv_field_is_read(tmp_path: Path, simulator: Any) -> None:
    """Item 8: a CSV record whose quoted field spans lines is collected; line numbers stay right."""
    sim = simulator(machines=3)
    name = sim.site.name
    machines = tmp_path / "machines.csv"
    machines.write_bytes(
        (
            f'Name,Notes\r\n{name(0)},"racked in\r\nParis"\r\n{name(1)},plain\r\n'
            f'bad\x01name,x\r\n{name(2)},"two\r\n\r\nbreaks"\r\n'
        ).encode()
    )

    done = collect(tmp_path, sim, machines)

    assert done.returncode == 1, done.stderr[-3000:]
    (bad,) = errors_of(tmp_path / "out")
    assert bad["kind"] == "invalid_input"
    assert bad["message"].startswith(f"{machines}:5: ")  # the physical line of the bad record
    assert_exactly_once(tmp_path / "out", sim, range(3))


@pytest.mark.parametrize(
    ("name", "content"),
    [
        pytest.param("machines.txt", "", id="empty"),
        pytest.param("machines.txt", "# none yet\n\n   \n# still none\n", id="only-comments"),
        pytest.param("machines.csv", "Name,Site\r\n\r\n", id="csv-header-only"),
    ],
)
def test_a_list_without_a_machine_stops_before_any_request(
    tmp_path: Path, simulator: Any, name: str, content: str
) -> None:
    """Item 9: an empty list, or one of only comments and blanks, is exit 2 naming the file."""
    sim = simulator(machines=2)
    machines = tmp_path / name
    machines.write_text(content)

    done = collect(tmp_path, sim, machines)

    assert done.returncode == 2, done.stderr[-3000:]
    assert f"no machine in {machines}" in done.stderr
    assert requests_made(sim) == 0
    assert not (tmp_path / "out").exists()


def test_an_empty_site_is_a_success_with_a_warning(tmp_path: Path, simulator: Any) -> None:
    """Item 9: --all-machines on a site without machines exits 0 and says it found none."""
    sim = simulator(machines=0)

    done = collect(tmp_path, sim, tmp_path / "unused.txt", "--all-machines")

    assert done.returncode == 0, done.stderr[-3000:]
    assert "WARNING" in done.stderr
    assert "the API listed no machine" in done.stderr


def test_verify_tls_false_warns_at_the_start(tmp_path: Path, simulator: Any) -> None:
    """Item 11: `verify_tls = false` logs one warning at the start of the run."""
    sim = simulator(machines=2)
    machines = tmp_path / "machines.txt"
    machines.write_text(f"{sim.site.name(0)}\n{sim.site.name(1)}\n")

    done = collect(tmp_path, sim, machines, api={"verify_tls": False})

    assert done.returncode == 0, done.stderr[-3000:]
    warnings = [line for line in done.stderr.splitlines() if "verify_tls = false" in line]
    assert len(warnings) == 1
    assert "WARNING" in warnings[0]


def test_a_lone_cr_in_a_name_is_invalid_input(tmp_path: Path, simulator: Any) -> None:
    """Also: a bare CR inside a name is a control character, not a break into two names."""
    sim = simulator(machines=2)
    machines = tmp_path / "machines.txt"
    machines.write_bytes(f"{sim.site.name(0)}\r\nCORP\rGHOST\n{sim.site.name(1)}\n".encode())

    done = collect(tmp_path, sim, machines)

    assert done.returncode == 1, done.stderr[-3000:]
    (bad,) = errors_of(tmp_path / "out")
    assert (bad["kind"], bad["machine"]) == ("invalid_input", "CORP\rGHOST")
    assert "U+000D" in bad["message"]
    assert sim.counters.requests["machine_sessions"] == 2
