"""The bench's table: rows with their figures and verdicts, rendered as text, markdown or JSON.

Pure: nothing here runs a child, reads the clock or touches a file except `write_json`. A row
is one SPEC 8 target (or a reference figure beside one); its verdict is decided from plain
numbers by `Target.met`, so the same rule serves the table, `latest.json` and the tests.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

PASS, FAIL, INFO, NOT_RUN, NOT_AVAILABLE = "PASS", "FAIL", "info", "NOT RUN", "not available"
Op = Literal[">=", "<=", "<"]
Figure = float | int | str | bool | None


@dataclass(frozen=True, slots=True)
class Target:
    """A bound a figure must meet, e.g. `Target(">=", 576, "machines/s")`."""

    op: Op
    bound: float
    unit: str = ""
    why: str = ""  # how the bound is derived: "90% of 64/0.1 s"

    def met(self, value: float) -> bool:
        if self.op == ">=":
            return value >= self.bound
        if self.op == "<=":
            return value <= self.bound
        return value < self.bound

    def text(self) -> str:
        bound = f"{self.bound:,.0f}" if self.bound >= 100 else f"{self.bound:g}"
        unit = f" {self.unit}" if self.unit else ""
        why = f" ({self.why})" if self.why else ""
        return f"{self.op} {bound}{unit}{why}"


@dataclass(slots=True)
class Row:
    """One line of the table; `figures` holds every number behind `measured`, for the JSON."""

    bench: str
    scale: str
    measured: str
    target: str
    result: str
    value: float | None = None
    bound: float | None = None
    figures: dict[str, Figure] = field(default_factory=dict)


COLUMNS = ("bench", "scale", "measured", "target", "result")
HEADER = ("bench", "scale (SPEC size)", "measured", "target (SPEC 8)", "result")


@dataclass
class Report:
    """The rows in the order they were measured, and notes printed under the table."""

    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def check(
        self,
        bench: str,
        scale: str,
        measured: str,
        target: Target,
        value: float,
        **figures: Figure,
    ) -> Row:
        """A row whose verdict is `target.met(value)`."""
        result = PASS if target.met(value) else FAIL
        row = Row(bench, scale, measured, target.text(), result, value, target.bound, figures)
        self.rows.append(row)
        return row

    def info(self, bench: str, scale: str, measured: str, **figures: Figure) -> Row:
        """A reference figure with no target of its own."""
        row = Row(bench, scale, measured, "-", INFO, figures=figures)
        self.rows.append(row)
        return row

    def fail(self, bench: str, scale: str, why: str, target: Target | str) -> Row:
        """A row whose run went wrong: it counts as a missed target."""
        text = target.text() if isinstance(target, Target) else target
        row = Row(bench, scale, f"run failed: {why}", text, FAIL)
        self.rows.append(row)
        return row

    def not_run(self, bench: str, scale: str, target: Target | str, why: str) -> Row:
        text = target.text() if isinstance(target, Target) else target
        row = Row(bench, scale, f"not run: {why}", text, NOT_RUN)
        self.rows.append(row)
        return row

    def not_available(self, bench: str, scale: str, target: Target | str, why: str) -> Row:
        """A row this build cannot measure: a feature of the collector or simulator is missing."""
        text = target.text() if isinstance(target, Target) else target
        row = Row(bench, scale, f"not available: {why}", text, NOT_AVAILABLE)
        self.rows.append(row)
        return row

    def count(self, result: str) -> int:
        return sum(row.result == result for row in self.rows)


def cells(row: Row) -> list[str]:
    return [getattr(row, name) for name in COLUMNS]


def render_text(report: Report) -> str:
    """The table as aligned columns, the notes, and the counts of missed and skipped rows."""
    table = [list(HEADER), *(cells(row) for row in report.rows)]
    widths = [max(len(line[n]) for line in table) for n in range(len(COLUMNS))]

    def line(values: list[str]) -> str:
        return " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()

    out = ["", line(table[0]), "-+-".join("-" * w for w in widths)]
    out += [line(values) for values in table[1:]]
    out += ["", *(f"  * {note}" for note in report.notes), "", *footer(report)]
    return "\n".join(out)


def render_markdown(report: Report) -> str:
    """The table as GitHub markdown (pipes in cells escaped), then the notes and the counts."""

    def line(values: list[str] | tuple[str, ...]) -> str:
        return "| " + " | ".join(v.replace("|", "\\|") for v in values) + " |"

    out = [line(HEADER), "|" + "---|" * len(COLUMNS)]
    out += [line(cells(row)) for row in report.rows]
    out += ["", *(f"- {note}" for note in report.notes), "", *footer(report)]
    return "\n".join(out)


def footer(report: Report) -> list[str]:
    return [
        f"not run: {report.count(NOT_RUN)}",
        f"not available: {report.count(NOT_AVAILABLE)}",
        f"targets missed: {report.count(FAIL)}",
    ]


def machine_info() -> dict[str, Any]:
    """Where the figures were taken: cores, CPU model, Python, OS, and when."""
    model = platform.processor() or platform.machine()
    try:
        for text in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if text.startswith("model name"):
                model = text.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "os": platform.platform(),
        "date": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
    }


def machine_line(machine: dict[str, Any]) -> str:
    """`machine: 2 cores, <CPU model>, CPython 3.11.9, <OS>, <date>`, under the table."""
    return (
        f"machine: {machine['cores']} cores, {machine['cpu_model']}, "
        f"{machine.get('implementation', 'Python')} {machine['python']}, "
        f"{machine.get('os', '')}, {machine['date']}"
    )


def document(report: Report, machine: dict[str, Any], mode: str, seconds: float) -> dict[str, Any]:
    """What `latest.json` holds: the machine, the mode, every row with its figures, the counts."""
    return {
        "machine": machine,
        "mode": mode,
        "duration_s": round(seconds, 1),
        "rows": [asdict(row) for row in report.rows],
        "notes": report.notes,
        "targets_missed": report.count(FAIL),
        "not_run": report.count(NOT_RUN),
        "not_available": report.count(NOT_AVAILABLE),
    }


def write_json(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
