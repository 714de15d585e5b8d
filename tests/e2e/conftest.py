"""End-to-end helpers: the simulator in a thread of the test process, the real CLI in a child.

Each test starts its own simulator on 127.0.0.1 and runs `python -m collector` as a
subprocess, as a user or a scheduler would, then checks the files against the simulator's
seeded data. Every `run` or `demo` that ends with a complete manifest is checked by
`collector verify`'s own function as well, as a downstream job would check it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import tomllib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from collector.simulator import SimulatorConfig, start_in_thread
from collector.verify import verify_run

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
SECRET = "e2e-Secret-value-0123456789"  # must never reach a file or a log line


@dataclass
class Finished:
    returncode: int
    stdout: bytes
    stderr: str


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return str(value)


def write_config(path: Path, sections: dict[str, dict[str, Any]]) -> Path:
    lines: list[str] = []
    for section, keys in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {toml_value(value)}" for key, value in keys.items()]
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def cli_env(sim: Any, secret: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COLLECTOR_", "CITRIX_"))}
    env["CITRIX_CLIENT_ID"] = sim.client_id
    env["CITRIX_CLIENT_SECRET"] = sim.client_secret if secret is None else secret
    env["PYTHONPATH"] = str(REPO)
    return env


def start_cli(
    args: list[str], env: dict[str, str], cwd: Path, **popen: Any
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "collector", *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **popen,
    )


def run_cli(
    args: list[str], env: dict[str, str], cwd: Path, timeout: float = 180, **popen: Any
) -> Finished:
    process = start_cli(args, env, cwd, **popen)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        process.kill()
        out, err = process.communicate()
        message = f"collector did not finish in {timeout} s:\n{err.decode()[-3000:]}"
        raise AssertionError(message) from exc
    assert_verified(args, cwd, process.returncode)
    return Finished(process.returncode, out, err.decode())


def flag_value(args: list[str], *flags: str) -> str | None:
    for i, arg in enumerate(args[:-1]):
        if arg in flags:
            return args[i + 1]
    return None


def output_directory(args: list[str], cwd: Path) -> Path | None:
    """The directory a `collector run` or `collector demo` wrote into; None for stdout."""
    command = args[0] if args else ""
    if command not in ("run", "demo"):
        return None
    out = flag_value(args, "--out")
    if out is None and command == "demo":
        out = "demo-out"
    if out is None:
        config = flag_value(args, "-c", "--config")
        sections = tomllib.loads((cwd / config).read_text()) if config else {}
        out = sections.get("output", {}).get("dir", "out")
    return None if out == "-" else cwd / str(out)


def assert_verified(args: list[str], cwd: Path, returncode: int) -> None:
    """A run that finished (exit 0 or 1) with a complete manifest passes `collector verify`."""
    out = output_directory(args, cwd)
    if returncode not in (0, 1) or out is None or not (out / "manifest.json").exists():
        return
    if orjson.loads((out / "manifest.json").read_bytes()).get("complete") is not True:
        return
    problems = verify_run(out).problems
    assert not problems, "collector verify: " + "\n".join(problems[:20])


def wait_for(predicate: Any, timeout: float = 60, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def committed_records(out: Path) -> list[dict[str, Any]]:
    """Every record of every committed (renamed) session file, in file order."""
    records = []
    for path in sorted(out.glob("sessions-*.ndjson")):
        records += [orjson.loads(line) for line in path.read_bytes().splitlines()]
    return records


def expected_ids(sim: Any, indices: range | list[int]) -> Counter[str]:
    return Counter(s["Id"] for i in indices for s in sim.site.sessions(i))


def assert_exactly_once(out: Path, sim: Any, indices: range | list[int]) -> list[dict[str, Any]]:
    records = committed_records(out)
    got = Counter(r["Id"] for r in records)
    want = expected_ids(sim, indices)
    duplicates = {k: n for k, n in got.items() if n > 1}
    assert not duplicates, f"{len(duplicates)} sessions written more than once"
    missing = set(want) - set(got)
    extra = set(got) - set(want)
    assert not missing, f"{len(missing)} sessions missing"
    assert not extra, f"{len(extra)} unexpected sessions"
    return records


def assert_no_secret(out: Path, *texts: str) -> None:
    for path in out.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), f"the secret is in {path}"
    for text in texts:
        assert SECRET not in text


def sigterm(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)


@pytest.fixture
def simulator() -> Iterator[Any]:
    """A factory: `simulator(machines=..., faults=...)` starts one; all are stopped at the end."""
    handles: list[Any] = []

    def start(**options: Any) -> Any:
        options.setdefault("client_secret", SECRET)
        handle = start_in_thread(SimulatorConfig(**options))
        handles.append(handle)
        return handle

    yield start
    for handle in handles:
        handle.stop()


def base_config(
    tmp_path: Path, sim: Any, machines: Path, out: Path, **overrides: dict[str, Any]
) -> Path:
    sections: dict[str, dict[str, Any]] = {
        "api": {"base_url": sim.base_url, "customer_id": sim.customer_id},
        "auth": {"token_url": sim.token_url},
        "input": {"machines": str(machines)},
        "collect": {"concurrency": 16, "rate": 0, "max_backoff_s": 1, "request_timeout_s": 5},
        "output": {"dir": str(out)},
    }
    for section, keys in overrides.items():
        sections.setdefault(section, {}).update(keys)
    return write_config(tmp_path / "site.toml", sections)


def setup_run(
    tmp_path: Path, sim: Any, *, concurrency: int = 8, per_file: int = 150, **collect: Any
) -> tuple[Path, Path]:
    """A config collecting the simulator's whole site (mixed name forms) into `tmp_path/out`."""
    machines = tmp_path / "machines.txt"
    sim.site.write_machine_list(machines, form="mixed")
    out = tmp_path / "out"
    config = base_config(
        tmp_path,
        sim,
        machines,
        out,
        collect={"concurrency": concurrency, **collect},
        output={"max_records_per_file": per_file},
    )
    return config, out


def journal_commits(out: Path) -> int:
    """How many commit lines the run's journal holds so far."""
    try:
        return (out / "journal.ndjson").read_bytes().count(b'"t":"commit"')
    except FileNotFoundError:
        return 0
