"""The composition root's pure parts: feeding machines, planning retries, collapsing errors.

And the run's flags as the command line takes them.
"""

from __future__ import annotations

import pytest

from collector.app import collapse
from collector.cli import main
from collector.errors import ApiError, AuthError
from collector.feed import MachineFeed, retry_machines
from collector.models import ErrorKind, Failure, InvalidLine, Machine, RunStats, key_digest


def failure(machine: str, kind: ErrorKind) -> Failure:
    return Failure(machine, kind, None, "x", 1, None, "t")


class TestMachineFeed:
    def test_duplicates_are_dropped_case_insensitively_and_counted(self) -> None:
        """The second spelling of a machine is dropped and counted as a duplicate."""
        stats = RunStats()
        feed = MachineFeed(stats, shard=None, committed=set())

        kept = [feed.accept(Machine.from_name(n)) for n in ("CORP\\A", "corp\\a", "CORP\\B")]

        assert kept == [True, False, True]
        assert stats.duplicates == 1
        assert stats.machines_total == 2

    def test_committed_machines_are_skipped(self) -> None:
        """On resume, machines already in committed files are not collected again."""
        stats = RunStats()
        feed = MachineFeed(stats, shard=None, committed={key_digest("corp\\a")})

        assert not feed.accept(Machine.from_name("CORP\\A"))
        assert stats.machines_skipped == 1

    def test_shards_partition_machines_and_bad_lines(self) -> None:
        """Across N shards every machine and every bad line is taken by exactly one shard."""
        names = [f"CORP\\VDA-{i:04d}" for i in range(500)]
        bad = [InvalidLine("m.txt", i, "control character", f"bad\x01{i}") for i in range(50)]
        taken: list[str] = []
        for k in range(4):
            feed = MachineFeed(RunStats(), shard=(k, 4), committed=set())
            taken += [m for m in names if feed.accept(Machine.from_name(m))]
            taken += [b.text for b in bad if feed.accept(b)]

        assert sorted(taken) == sorted(names + [b.text for b in bad])


def test_retry_machines_skip_invalid_input_committed_and_repeats() -> None:
    """--retry-failed takes failed machines once each, not bad lines nor committed ones."""
    failures = [
        failure("A", ErrorKind.SERVER_ERROR),
        failure("a", ErrorKind.TIMEOUT),
        failure("m.txt:3", ErrorKind.INVALID_INPUT),
        failure("B", ErrorKind.NOT_FOUND),
        failure("C", ErrorKind.THROTTLED),
    ]

    machines = retry_machines(failures, committed={key_digest("c")})

    assert [m.name for m in machines] == ["A", "B"]


def test_collapse_prefers_the_fatal_error() -> None:
    """Of the errors that ended a task group, the fatal one decides the exit."""
    api = ApiError("x", kind=ErrorKind.NETWORK)
    fatal = AuthError("refused")

    assert collapse(BaseExceptionGroup("g", [api, ExceptionGroup("h", [fatal])])) is fatal


@pytest.mark.parametrize(
    "flags",
    [
        pytest.param(["--resume", "--overwrite"], id="resume-overwrite"),
        pytest.param(["--retry-failed", "--overwrite"], id="retry-overwrite"),
        pytest.param(["--resume", "--retry-failed"], id="resume-retry"),
    ],
)
def test_run_directory_flags_are_mutually_exclusive(
    flags: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Two of --resume, --retry-failed, --overwrite are a usage error (exit 2) naming both."""
    with pytest.raises(SystemExit) as exited:
        main(["run", "--out", "out", *flags])

    assert exited.value.code == 2
    assert f"argument {flags[1]}: not allowed with argument {flags[0]}" in capsys.readouterr().err
