"""Plain values shared by every stage: machines, outcomes, failures and run counters.

No I/O and no imports from the rest of `collector`, so every module can depend on this one.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class ErrorKind(enum.StrEnum):
    """Why a machine is listed in `errors.ndjson` (SPEC 6.1)."""

    NOT_FOUND = "not_found"
    FORBIDDEN = "forbidden"
    REJECTED = "rejected"  # 400, or 406 after the run's first success: the request was refused
    THROTTLED = "throttled"
    SERVER_ERROR = "server_error"
    TIMEOUT = "timeout"
    NETWORK = "network"
    INVALID_RESPONSE = "invalid_response"
    INVALID_INPUT = "invalid_input"


def machine_key(name: str) -> str:
    """The dedupe, shard and journal key of a machine: trimmed and case-folded."""
    return name.strip().casefold()


@dataclass(frozen=True, slots=True)
class Machine:
    """One machine to collect, as the input named it.

    `name` is what the user wrote (or `Machine.Name` from discovery) and becomes `_machine`
    in every record; `key` is `machine_key(name)`; `source` and `line` say where it came from,
    for messages.
    """

    name: str
    key: str
    source: str = ""
    line: int | None = None

    @classmethod
    def from_name(cls, name: str, source: str = "", line: int | None = None) -> Machine:
        name = name.strip()
        return cls(name=name, key=machine_key(name), source=source, line=line)


@dataclass(frozen=True, slots=True)
class InvalidLine:
    """A line of the machine list that could not be read (becomes an `invalid_input` failure)."""

    source: str
    line: int
    message: str
    text: str = ""

    def where(self) -> str:
        return f"{self.source}:{self.line}"


@dataclass(frozen=True, slots=True)
class Failure:
    """A machine that could not be collected: one line of `errors.ndjson`."""

    machine: str
    kind: ErrorKind
    status: int | None
    message: str
    attempts: int
    transaction_id: str | None
    at: str

    def to_json(self) -> dict[str, Any]:
        return {
            "machine": self.machine,
            "kind": self.kind.value,
            "status": self.status,
            "message": self.message,
            "attempts": self.attempts,
            "transaction_id": self.transaction_id,
            "at": self.at,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Failure:
        return cls(
            machine=str(data["machine"]),
            kind=ErrorKind(data["kind"]),
            status=data.get("status"),
            message=str(data.get("message", "")),
            attempts=int(data.get("attempts", 0)),
            transaction_id=data.get("transaction_id"),
            at=str(data.get("at", "")),
        )


@dataclass(slots=True)
class Collected:
    """The sessions of one machine, as the API answered them."""

    machine: Machine
    sessions: list[dict[str, Any]]
    collected_at: str


@dataclass(slots=True)
class Failed:
    """A machine whose collection failed for good."""

    machine: Machine
    failure: Failure


Outcome = Collected | Failed


@dataclass(slots=True)
class RunStats:
    """Counters of one process's run, read by progress, the summary, the manifest and metrics."""

    machines_total: int = 0  # machines handed to the workers (after dedupe, shard, resume)
    machines_ok: int = 0
    machines_skipped: int = 0  # already committed by an earlier run (resume)
    duplicates: int = 0
    failed: dict[str, int] = field(default_factory=dict)  # ErrorKind value -> count
    sessions: int = 0
    requests: int = 0
    retries: int = 0
    throttled: int = 0  # 429 answers
    token_requests: int = 0
    current_rate: float = 0.0  # requests/s the pacer allows now (0: no limit)
    current_window: int = 0  # requests the pacer allows in flight now
    discovery_done: bool = True  # False while the machine list is still streaming in

    @property
    def machines_failed(self) -> int:
        return sum(self.failed.values())

    @property
    def machines_done(self) -> int:
        return self.machines_ok + self.machines_failed

    def count_failure(self, kind: ErrorKind) -> None:
        self.failed[kind.value] = self.failed.get(kind.value, 0) + 1
