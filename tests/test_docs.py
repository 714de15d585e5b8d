"""The docs cannot drift from the tool: help examples, README commands and flags."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import orjson
import pytest

from collector.cli import build_parser, main
from collector.flatten import make_flattener, make_record_encoder
from collector.simulator.data import Site

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
COMMANDS = ("run", "machines", "check", "verify", "simulate", "demo")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_examples_in_its_help(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`collector COMMAND --help` ends with examples that use that command."""
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])

    assert exited.value.code == 0
    text = capsys.readouterr().out
    assert "examples:" in text
    assert f"collector {command}" in text.split("examples:", 1)[1]


def test_readme_make_targets_exist() -> None:
    """Every `make X` the README names is a target of the Makefile."""
    makefile = (REPO / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, re.MULTILINE))

    named = set(re.findall(r"\bmake ([a-z][a-z-]*)", README))

    assert {"demo", "test"} <= named
    assert named <= targets


def test_readme_flags_exist() -> None:
    """Every `collector COMMAND --flag` in the README is a flag of that command."""
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for command, rest in re.findall(
        r"collector (run|machines|check|simulate|demo)([^\n`]*)", README
    ):
        known = {o for a in subparsers.choices[command]._actions for o in a.option_strings}
        for flag in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", rest):
            assert flag in known, f"README: collector {command} {flag} is not a flag"


def readme_record() -> dict[str, object]:
    """The README's example record: the JSON block under "### The record"."""
    section = README.split("### The record", 1)[1]
    block = section.split("```json", 1)[1].split("```", 1)[0]
    record: dict[str, object] = orjson.loads(block)
    return record


def test_readme_record_example_uses_the_official_model() -> None:
    """Every field of the README's example record is a field the official model gives a record.

    The simulator serves exactly Citrix's model (its tests validate it against the schema), so
    the keys of its flattened `full` sessions are the keys a record can have.
    """
    site = Site(machines=300, seed=1, shape="full")
    encode = make_record_encoder(make_flattener(), run_id="r", site_id="s")
    known: set[str] = set()
    for index in range(300):
        sessions = site.sessions(index)
        if sessions:
            for line in encode(site.name(index), "t", sessions).splitlines():
                known.update(orjson.loads(line))

    example = set(readme_record()) - {"..."}

    assert example - known == set()
    assert "Machine.LastConnectionUser.DisplayName" in example
